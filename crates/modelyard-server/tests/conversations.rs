//! End-to-end tests of conversations (`/v1/conversations`): model
//! resolution, the model contract, turns, streaming, the events feed with
//! replay and resume, and the event-log invariants, against the mock
//! upstream.

#![allow(clippy::unwrap_used)]

mod common;

use common::conv::*;
use common::TestServer;
use modelyard_testkit::MockOptions;
use serde_json::{json, Value};

/// The models the mock lists in these tests.
const LISTED: &[&str] = &[
    "mock-model",
    "echo",
    "slow:30",
    "slow:200",
    "slow:100",
    "slow:1",
    "drop",
    "status:500",
    "hang",
];

/// A long user message: many words, so `slow:*` streams many chunks.
fn long_text(words: usize) -> String {
    (0..words)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn server() -> TestServer {
    TestServer::builder()
        .listed(LISTED)
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await
}

// ------------------------------------------------------------------ 1. resolution

#[tokio::test]
async fn the_request_model_wins_and_becomes_the_selection_non_chat_operations_leave_it_alone() {
    let server = server().await;
    let conv = create(&server, json!({"title": "resolution"})).await;

    // 1. The request's model wins and becomes the selection.
    let (started, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "one", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(started["modelId"], "mock/echo");
    assert_eq!(started["resolvedFrom"], "request");
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(turn["resolvedFrom"], "request");
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}/model")).await,
        json!({"conversationId": conv, "model": "mock/echo"})
    );
    let h = history(&server, &conv).await;
    assert_eq!(h.len(), 2, "{h:#?}");
    assert_eq!(h[0]["kind"], "selected");
    assert_eq!(h[0]["model"], "mock/echo");
    assert_eq!(h[0]["previous"], Value::Null);
    assert_eq!(h[0]["source"], "turnOverride");
    assert_eq!(h[1]["kind"], "turn");
    assert_eq!(h[1]["turnId"], started["turnId"]);
    assert_eq!(h[1]["model"], "mock/echo");
    assert_eq!(h[1]["operation"], "chat");
    assert_eq!(h[1]["resolvedFrom"], "request");
    assert!(h[0]["seq"].as_i64() < h[1]["seq"].as_i64());

    // 2. No model: the persisted selection.
    let (started, _) = run_turn(&server, &conv, json!({"content": "two"})).await;
    assert_eq!(started["modelId"], "mock/echo");
    assert_eq!(started["resolvedFrom"], "conversation");

    // Naming the selected model again (even as a bare id) changes nothing.
    let (started, _) = run_turn(&server, &conv, json!({"content": "2b", "model": "echo"})).await;
    assert_eq!(started["modelId"], "mock/echo");
    assert_eq!(started["resolvedFrom"], "request");
    let h = history(&server, &conv).await;
    assert_eq!(
        h.iter().filter(|e| e["kind"] == "selected").count(),
        1,
        "no selection change, no model.selected: {h:#?}"
    );

    // A non-chat operation with a request model does not touch the selection.
    let (started, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "name it", "model": "mock/mock-model", "operation": "title"}),
    )
    .await;
    assert_eq!(started["modelId"], "mock/mock-model");
    assert_eq!(started["resolvedFrom"], "request");
    assert_eq!(turn["operation"], "title");
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}/model")).await["model"],
        "mock/echo"
    );
    // Nor does a non-chat operation use the chat selection.
    let (started, _) = run_turn(
        &server,
        &conv,
        json!({"content": "name it", "operation": "title"}),
    )
    .await;
    assert_eq!(started["modelId"], "mock/mock-model");
    assert_eq!(started["resolvedFrom"], "serverDefault");
    let h = history(&server, &conv).await;
    assert_eq!(h.iter().filter(|e| e["kind"] == "selected").count(), 1);
    assert_eq!(h.iter().filter(|e| e["kind"] == "turn").count(), 5);
}

#[tokio::test]
async fn a_cleared_selection_falls_back_to_the_server_default() {
    let server = server().await;
    // Given a conversation whose turn selected `mock/echo`.
    let conv = create(&server, json!({"title": "resolution"})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "one", "model": "mock/echo"}),
    )
    .await;

    // 3. Cleared selection: the server default.
    let (status, body) = send(
        &server,
        "PUT",
        &format!("/v1/conversations/{conv}/model"),
        Some(json!({"model": null})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (started, turn) = run_turn(&server, &conv, json!({"content": "three"})).await;
    assert_eq!(started["modelId"], "mock/mock-model");
    assert_eq!(started["resolvedFrom"], "serverDefault");
    assert_eq!(turn["status"], "completed");
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}/model")).await["model"],
        Value::Null,
        "a server default is not persisted"
    );
    let h = history(&server, &conv).await;
    let cleared = h.iter().find(|e| e["kind"] == "cleared").expect("cleared");
    assert_eq!(cleared["previous"], "mock/echo");
    assert_eq!(cleared["source"], "api");
    assert_eq!(h.last().unwrap()["resolvedFrom"], "serverDefault");
}

#[tokio::test]
async fn with_no_default_and_no_selection_a_turn_is_422_and_appends_nothing() {
    // 4. No default and no selection: 422, and nothing appended.
    let bare = TestServer::builder().listed(LISTED).start().await;
    let conv = create(&bare, json!({})).await;
    let (status, problem) = send(
        &bare,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        log(&bare, &conv).await.len(),
        1,
        "only conversation.created"
    );
    // With a request model it works there too.
    let (started, turn) =
        run_turn(&bare, &conv, json!({"content": "x", "model": "mock/echo"})).await;
    assert_eq!(started["resolvedFrom"], "request");
    assert_eq!(turn["status"], "completed");
}

// ------------------------------------------------------------------ 2. model contract

#[tokio::test]
async fn a_selection_is_set_cleared_and_accepted_unverified_when_unreachable() {
    let server = TestServer::builder()
        .listed(LISTED)
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\n\
             [[providers]]\nname = \"far\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .start()
        .await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/model");

    assert_eq!(
        get(&server, &path).await,
        json!({"conversationId": conv, "model": null})
    );
    let (status, body) = send(&server, "PUT", &path, Some(json!({"model": "mock/echo"}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"conversationId": conv, "model": "mock/echo", "verified": true})
    );
    assert_eq!(
        get(&server, &path).await,
        json!({"conversationId": conv, "model": "mock/echo"})
    );
    // A bare id is stored as its composite id.
    let (status, body) = send(&server, "PUT", &path, Some(json!({"model": "mock-model"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "mock/mock-model");

    // null clears.
    let (status, body) = send(&server, "PUT", &path, Some(json!({"model": null}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["conversationId"], conv);
    assert_eq!(body["model"], Value::Null);
    assert_eq!(
        get(&server, &path).await,
        json!({"conversationId": conv, "model": null})
    );

    // A provider at a closed port: accepted unverified, persisted.
    let (status, body) = send(
        &server,
        "PUT",
        &path,
        Some(json!({"model": "far/some-model"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"conversationId": conv, "model": "far/some-model", "verified": false})
    );
    assert_eq!(get(&server, &path).await["model"], "far/some-model");

    // The online provider goes down: its unlisted model is accepted unverified.
    server.mock.set_down(true);
    let (status, _) = send(&server, "POST", "/v1/providers/mock/refresh", None).await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &server,
        "PUT",
        &path,
        Some(json!({"model": "mock/not-listed"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"conversationId": conv, "model": "mock/not-listed", "verified": false})
    );
    assert_eq!(get(&server, &path).await["model"], "mock/not-listed");
    // A listed one is also unverified while the provider is down.
    let (_, body) = send(&server, "PUT", &path, Some(json!({"model": "mock/echo"}))).await;
    assert_eq!(body["verified"], false, "{body}");

    let h = history(&server, &conv).await;
    let models: Vec<&Value> = h.iter().map(|e| &e["model"]).collect();
    assert_eq!(
        models,
        [
            &json!("mock/echo"),
            &json!("mock/mock-model"),
            &Value::Null,
            &json!("far/some-model"),
            &json!("mock/not-listed"),
            &json!("mock/echo"),
        ],
        "{h:#?}"
    );
    assert!(h.iter().all(|e| e["source"] == "api"));
}
#[tokio::test]
async fn only_malformed_model_selections_are_refused_and_they_change_nothing() {
    let server = TestServer::builder()
        .listed(LISTED)
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\n\
             [[providers]]\nname = \"far\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9\"\n",
        )
        .start()
        .await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/model");
    // Given a conversation with no selection.

    // Malformed ids: 422 invalid_model_id, with suggestions.
    for bad in ["mock/", "mock/ech o", "/echo", "echo/", "mock/echo\n"] {
        let (status, problem) = send(&server, "PUT", &path, Some(json!({"model": bad}))).await;
        assert_eq!(status, 422, "{bad:?}: {problem}");
        assert_eq!(problem["code"], "invalid_model_id", "{bad:?}: {problem}");
        assert!(problem["suggestions"].is_array(), "{problem}");
    }
    let (_, problem) = send(&server, "PUT", &path, Some(json!({"model": "mock/ech o"}))).await;
    assert!(
        problem["suggestions"]
            .as_array()
            .unwrap()
            .contains(&json!("mock/echo")),
        "suggestions: {problem}"
    );
    let long = "m".repeat(600);
    let (status, problem) = send(&server, "PUT", &path, Some(json!({"model": long}))).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "invalid_model_id");
    assert_eq!(get(&server, &path).await["model"], Value::Null, "unchanged");
    // Malformed bodies.
    let (status, _) = send(&server, "PUT", &path, Some(json!({"modell": "x"}))).await;
    assert_eq!(status, 400);
    let (status, _) = send(&server, "PUT", &path, Some(json!({"model": 5}))).await;
    assert!(status == 400 || status == 422, "{status}");
    // Unknown conversation.
    let (status, _) = send(&server, "GET", "/v1/conversations/nope/model", None).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &server,
        "PUT",
        "/v1/conversations/nope/model",
        Some(json!({"model": "mock/echo"})),
    )
    .await;
    assert_eq!(status, 404);
    // Nothing of the above reached the model history.
    assert!(history(&server, &conv).await.is_empty());
}

#[tokio::test]
async fn an_empty_model_clears_like_null() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/echo"})).await;
    let path = format!("/v1/conversations/{conv}/model");
    let (status, body) = send(&server, "PUT", &path, Some(json!({"model": ""}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"conversationId": conv, "model": null, "verified": true})
    );
    assert_eq!(
        get(&server, &path).await,
        json!({"conversationId": conv, "model": null})
    );
    let h = history(&server, &conv).await;
    let last = h.last().unwrap();
    assert_eq!(last["kind"], "cleared", "{h:#?}");
    assert_eq!(last["previous"], "mock/echo");
    // The next turn falls back to the server default, as after null.
    let (started, _) = run_turn(&server, &conv, json!({"content": "hi"})).await;
    assert_eq!(started["resolvedFrom"], "serverDefault");
}

#[tokio::test]
async fn a_well_formed_id_that_does_not_resolve_yet_is_stored_unverified_and_resolved_by_the_turn()
{
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/model");

    // An online provider that does not list the model (yet): stored as
    // written, verified false, and the history says so.
    let (status, body) = send(
        &server,
        "PUT",
        &path,
        Some(json!({"model": "mock/later-model"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"conversationId": conv, "model": "mock/later-model", "verified": false})
    );
    assert_eq!(get(&server, &path).await["model"], "mock/later-model");
    let h = history(&server, &conv).await;
    assert_eq!(h.last().unwrap()["verified"], false, "{h:#?}");
    // A bare id no provider lists: stored as written too.
    let (status, body) = send(&server, "PUT", &path, Some(json!({"model": "brand-new"}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "brand-new");
    assert_eq!(body["verified"], false);
    // A resolvable one is verified (and the history entry has no flag).
    let (_, body) = send(&server, "PUT", &path, Some(json!({"model": "mock/echo"}))).await;
    assert_eq!(body["verified"], true, "{body}");
    assert!(history(&server, &conv).await.last().unwrap()["verified"].is_null());

    // While it still does not resolve, the turn fails clearly, naming it.
    send(
        &server,
        "PUT",
        &path,
        Some(json!({"model": "mock/later-model"})),
    )
    .await;
    let (status, problem) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "model_not_found", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("later-model"),
        "{problem}"
    );
    // Once the provider lists it, the next turn runs with it.
    let mut listed: Vec<String> = LISTED.iter().map(|s| (*s).to_owned()).collect();
    listed.push("later-model".into());
    server.mock.set_listed_models(Some(listed));
    let (status, _) = send(&server, "POST", "/v1/providers/mock/refresh", None).await;
    assert_eq!(status, 200);
    let (started, turn) = run_turn(&server, &conv, json!({"content": "hello"})).await;
    assert_eq!(started["modelId"], "mock/later-model");
    assert_eq!(started["resolvedFrom"], "conversation");
    assert_eq!(turn["status"], "completed", "{turn}");
}

#[tokio::test]
async fn the_latest_model_moves_when_a_chat_turn_starts_and_only_for_chat() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}");
    run_turn(
        &server,
        &conv,
        json!({"content": "one", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(get(&server, &path).await["latestModelId"], "mock/echo");

    // A slow chat turn: the latest model is the new one as soon as the
    // turn started, before any answer.
    let started = start_turn(
        &server,
        &conv,
        json!({"content": long_text(40), "model": "mock/slow:100"}),
    )
    .await;
    let c = get(&server, &path).await;
    assert_eq!(c["status"], "running", "{c}");
    assert_eq!(c["latestModelId"], "mock/slow:100", "{c}");
    wait_turn(&server, &conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(get(&server, &path).await["latestModelId"], "mock/slow:100");

    // A turn of another operation does not move it, at its start or its
    // answer; neither does a title run.
    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "name it", "model": "mock/mock-model", "operation": "title"}),
    )
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(get(&server, &path).await["latestModelId"], "mock/slow:100");
    let (status, titled) = send(
        &server,
        "POST",
        &format!("{path}/title"),
        Some(json!({"model": "mock/echo"})),
    )
    .await;
    assert_eq!(status, 200, "{titled}");
    assert_eq!(get(&server, &path).await["latestModelId"], "mock/slow:100");
}

// ------------------------------------------------------------------ 3. turns

/// Given two completed turns of one conversation, the second switching to
/// another provider's model (`mock/echo`, then `b/echo`, which becomes the
/// conversation's model): the server, the conversation id, the first turn as
/// started and as ended, the second as ended, and the conversation read after
/// both.
struct TwoTurns {
    server: TestServer,
    conv: String,
    started: Value,
    turn: Value,
    turn2: Value,
    c: Value,
}

async fn two_turns_with_a_model_switch() -> TwoTurns {
    let server = TestServer::builder()
        .listed(LISTED)
        .mock("b", MockOptions::default())
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\n\
             [[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"{mock:b}\"\n",
        )
        .start()
        .await;
    let conv = create(&server, json!({})).await;

    let (started, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "hello there", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(turn["modelId"], "mock/echo");
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["latestModelId"], "mock/echo");

    let (_, turn2) = run_turn(
        &server,
        &conv,
        json!({"content": [{"type": "text", "text": "second question"}], "model": "b/echo"}),
    )
    .await;
    assert_eq!(turn2["status"], "completed", "{turn2}");
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["latestModelId"], "b/echo");
    assert_eq!(c["model"], "b/echo");

    TwoTurns {
        server,
        conv,
        started,
        turn,
        turn2,
        c,
    }
}

#[tokio::test]
async fn turns_leave_their_messages_and_the_next_call_sees_them_all() {
    let TwoTurns {
        server,
        conv,
        started,
        ..
    } = two_turns_with_a_model_switch().await;
    let msgs = messages(&server, &conv).await;
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(msgs[0]["content"], "hello there");
    assert_eq!(msgs[0]["turnId"], started["turnId"]);
    assert_eq!(msgs[1]["content"], "echo: hello there");
    assert_eq!(msgs[1]["modelId"], "mock/echo");
    assert_eq!(msgs[1]["finishReason"], "stop");
    assert_eq!(msgs[3]["content"], "echo: second question");
    assert_eq!(msgs[3]["modelId"], "b/echo");
    // The second call saw the whole conversation.
    let req = server.named("b").last_request().unwrap().json().unwrap();
    assert_eq!(req["messages"].as_array().unwrap().len(), 3, "{req}");
    assert_eq!(req["model"], "echo");
}

#[tokio::test]
async fn turn_usage_adds_up_per_message_turn_and_conversation() {
    let TwoTurns {
        server,
        conv,
        turn2,
        c,
        ..
    } = two_turns_with_a_model_switch().await;
    let msgs = messages(&server, &conv).await;
    // Usage per message and totals.
    let mut sums = [0u64; 3];
    for m in msgs.iter().filter(|m| m["role"] == "assistant") {
        let u = &m["usage"];
        assert!(u["promptTokens"].as_u64().unwrap() > 0, "{m}");
        sums[0] += u["promptTokens"].as_u64().unwrap();
        sums[1] += u["completionTokens"].as_u64().unwrap();
        sums[2] += u["totalTokens"].as_u64().unwrap();
    }
    assert_eq!(msgs[1]["usage"]["promptTokens"], 2);
    assert_eq!(msgs[1]["usage"]["completionTokens"], 3);
    let usage = &c["usage"];
    assert_eq!(usage["promptTokens"], sums[0], "{c}");
    assert_eq!(usage["completionTokens"], sums[1], "{c}");
    assert_eq!(usage["totalTokens"], sums[2], "{c}");
    assert_eq!(
        turn2["usage"]["totalTokens"], msgs[3]["usage"]["totalTokens"],
        "{turn2}"
    );
    // One vocabulary: conversation and turn totals carry exactly the names
    // of a message's usage.
    for totals in [usage, &turn2["usage"]] {
        let mut keys: Vec<&str> = totals
            .as_object()
            .expect("usage object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cachedPromptTokens",
                "completionTokens",
                "promptTokens",
                "reasoningTokens",
                "totalTokens"
            ],
            "{totals}"
        );
    }
}

#[tokio::test]
async fn each_turn_is_a_chat_call_linked_to_its_conversation_and_turn() {
    let TwoTurns {
        server,
        conv,
        turn,
        turn2,
        ..
    } = two_turns_with_a_model_switch().await;
    let msgs = messages(&server, &conv).await;
    // Each turn is a `chat` call in the log.
    let calls = server.wait_calls(2).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    assert!(calls.iter().all(|c| c["operation"] == "chat"), "{calls:#?}");
    assert!(calls.iter().all(|c| c["status"] == "ok"), "{calls:#?}");
    // Each call is linked to its conversation and turn.
    assert!(
        calls.iter().all(|c| c["conversationId"] == json!(conv)),
        "{calls:#?}"
    );
    let turn_ids: Vec<&Value> = calls.iter().map(|c| &c["turnId"]).collect();
    assert_eq!(turn_ids, [&turn2["id"], &turn["id"]], "{calls:#?}");
    let models: Vec<&Value> = calls.iter().map(|c| &c["modelId"]).collect();
    assert_eq!(models, [&json!("b/echo"), &json!("mock/echo")]);
    let full = server.call(calls[0]["id"].as_str().unwrap()).await;
    assert_eq!(full["responseText"], "echo: second question");
    assert_eq!(
        full["usage"]["totalTokens"],
        msgs[3]["usage"]["totalTokens"]
    );
}

#[tokio::test]
async fn the_event_log_of_two_turns_matches_the_tables() {
    let TwoTurns {
        server, conv, c, ..
    } = two_turns_with_a_model_switch().await;
    // The events log matches the tables.
    let events = log(&server, &conv).await;
    let types: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        types,
        [
            "conversation.created",
            "model.selected",
            "turn.started",
            "message.user",
            "message.assistant",
            "turn.completed",
            "model.selected",
            "turn.started",
            "message.user",
            "message.assistant",
            "turn.completed",
        ]
    );
    assert_eq!(c["lastSeq"], 11);
}

#[tokio::test]
async fn second_turn_conflicts_and_cancel_keeps_partial_text() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/slow:200"})).await;
    let mut sse = Sse::open(&server, &conv, None).await;
    assert_eq!(sse.replay().await.len(), 1);

    let started = start_turn(&server, &conv, json!({"content": long_text(30)})).await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    assert_eq!(started["resolvedFrom"], "conversation");
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "running");
    assert_eq!(c["runningTurnId"], turn_id.as_str());

    // A second turn while one runs: 409, and nothing appended.
    let before = c["lastSeq"].clone();
    let (status, problem) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "again"})),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"],
        before
    );

    // Let some text stream, then cancel.
    let seen = sse
        .until(|e| e.event == "text.delta" && delta_text(std::slice::from_ref(e)).contains("w0"))
        .await;
    let streamed = delta_text(&seen);
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["turnId"], turn_id.as_str());
    let rest = sse.until(|e| ends_turn(e, &turn_id)).await;
    assert_eq!(rest.last().unwrap().event, "turn.cancelled");
    assert!(
        server.mock.wait_cancelled(1, LIMIT).await,
        "the upstream stream was cancelled"
    );
    let turn = wait_turn(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "cancelled", "{turn}");

    let all: Vec<Ev> = seen.iter().chain(&rest).cloned().collect();
    let partial = assistant_text(&all);
    assert!(
        partial.starts_with(&streamed),
        "{partial:?} vs {streamed:?}"
    );
    assert!(partial.starts_with("echo: w0"), "{partial:?}");
    assert_eq!(delta_text(&all), partial, "the kept text is what streamed");
    let msgs = messages(&server, &conv).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["content"], partial.as_str());
    assert_eq!(msgs[1]["modelId"], "mock/slow:200");
    assert!(
        partial.len() < format!("echo: {}", long_text(30)).len(),
        "cancelled before the end"
    );

    // Cancelling again: 409; unknown turn: 404.
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/nope/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The call is recorded, as an error.
    let calls = server.wait_calls(1).await;
    assert_eq!(calls[0]["operation"], "chat");
    assert_eq!(calls[0]["status"], "error", "{calls:#?}");

    // The conversation goes on.
    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "after", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(turn["status"], "completed");
    let msgs = messages(&server, &conv).await;
    assert_eq!(msgs.last().unwrap()["content"], "echo: after");
    log(&server, &conv).await;
}

#[tokio::test]
async fn failing_upstreams_fail_the_turn_with_a_readable_record() {
    let server = server().await;
    let conv = create(&server, json!({})).await;

    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "a b", "model": "mock/status:500"}),
    )
    .await;
    assert_eq!(turn["status"], "failed", "{turn}");
    let error = turn["error"].as_str().expect("error");
    assert!(error.contains("500"), "{error}");

    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "c d e", "model": "mock/drop"}),
    )
    .await;
    assert_eq!(turn["status"], "failed", "{turn}");
    assert!(turn["error"].as_str().is_some_and(|e| !e.is_empty()));

    let events = log(&server, &conv).await;
    let failed: Vec<&Ev> = events.iter().filter(|e| e.event == "turn.failed").collect();
    assert_eq!(failed.len(), 2);
    assert!(failed[0].data["error"].as_str().unwrap().contains("500"));
    let msgs = messages(&server, &conv).await;
    // status:500: user only; drop: user + the partial answer.
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "user", "assistant"], "{msgs:#?}");
    assert_eq!(msgs[2]["content"], "echo: ", "{msgs:#?}");

    // A 500 is retried ([routing] retries = 2): three attempts, then the
    // turn fails; a stream that broke after its first chunk is not retried.
    let calls = server.wait_calls(4).await;
    assert_eq!(calls.len(), 4);
    for call in &calls {
        assert_eq!(call["operation"], "chat");
        assert_eq!(call["status"], "error", "{call}");
    }
    let mut attempts: Vec<i64> = calls
        .iter()
        .filter(|c| c["modelId"] == "mock/status:500")
        .map(|c| {
            assert_eq!(c["httpStatus"], 500, "{c}");
            c["attempt"].as_i64().unwrap()
        })
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, [1, 2, 3]);
    let drop_call = calls.iter().find(|c| c["modelId"] == "mock/drop").unwrap();
    assert_eq!(drop_call["attempt"], 1, "{drop_call}");
}

#[tokio::test]
async fn a_turn_model_that_does_not_resolve_is_422_before_anything_is_appended() {
    let server = server().await;
    let conv = create(&server, json!({})).await;

    // A model that does not resolve: 422 before anything is appended.
    let before = log(&server, &conv).await.len();
    let (status, problem) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "x", "model": "mock/ecko"})),
    )
    .await;
    assert_eq!(status, 422);
    assert!(problem["suggestions"].is_array(), "{problem}");
    assert_eq!(log(&server, &conv).await.len(), before);
}

#[tokio::test]
async fn bad_turn_bodies_are_refused() {
    let server = server().await;
    let conv = create(&server, json!({})).await;

    // Bad turn bodies.
    for body in [
        json!({"content": ""}),
        json!({"content": []}),
        json!({"content": 5}),
        json!({"content": "x", "operation": "Bad Op"}),
    ] {
        let (status, _) = send(
            &server,
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}");
    }
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "x", "bogus": 1})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(
        &server,
        "POST",
        "/v1/conversations/nope/turns",
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(status, 404);
}

// ------------------------------------------------------------------ 4. streaming turns

#[tokio::test]
async fn streaming_turn_answers_with_its_events() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "warm up", "model": "mock/echo"}),
    )
    .await;
    let before = get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"]
        .as_i64()
        .unwrap();

    let response = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .json(&json!({"content": long_text(12), "model": "mock/slow:30", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(response);
    let mut events = Vec::new();
    while let Some(ev) = sse.next().await {
        events.push(ev);
    }
    let persisted: Vec<&Ev> = events.iter().filter(|e| e.persisted()).collect();
    assert_eq!(
        persisted[0].seq(),
        before + 1,
        "starts at this turn's first event: {events:#?}"
    );
    assert_eq!(persisted[0].event, "model.selected");
    assert_eq!(persisted[1].event, "turn.started");
    let turn_id = persisted[1].data["turnId"].as_str().unwrap().to_owned();
    assert_eq!(persisted.last().unwrap().event, "turn.completed");
    assert!(
        ends_turn(events.last().unwrap(), &turn_id),
        "ends after turn.completed"
    );
    for w in persisted.windows(2) {
        assert_eq!(w[1].seq(), w[0].seq() + 1);
    }
    let deltas = events.iter().filter(|e| e.event == "text.delta").count();
    assert!(deltas >= 10, "{deltas} deltas");
    let text = assistant_text(&events);
    assert_eq!(text, format!("echo: {}", long_text(12)));
    let before_assistant: Vec<Ev> = events
        .iter()
        .take_while(|e| e.event != "message.assistant")
        .cloned()
        .collect();
    assert_eq!(delta_text(&before_assistant), text);
    assert!(
        events
            .iter()
            .all(|e| e.event != "text.delta" || e.data["turnId"] == turn_id.as_str()),
        "{events:#?}"
    );
    assert_eq!(
        events.iter().filter(|e| e.event == "caught-up").count(),
        1,
        "{events:#?}"
    );

    // Streaming conflicts like the JSON form.
    let response = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .json(&json!({"content": "x", "model": "mock/slow:200", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut first = Sse::new(response);
    first.until(|e| e.event == "turn.started").await;
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "y", "stream": true})),
    )
    .await;
    assert_eq!(status, 409);
    while first.next().await.is_some() {}
}

// ------------------------------------------------------------------ 5. reconnect

fn check_ids_increase(events: &[Ev]) {
    // Persisted ids strictly increase; transient ids strictly increase within a turn.
    let mut last_seq = 0;
    let mut last_transient: Option<(i64, u64)> = None;
    for e in events.iter().filter(|e| e.id.is_some()) {
        let id = e.id.as_deref().unwrap();
        let parts: Vec<&str> = id.split('.').collect();
        match parts.as_slice() {
            [seq, ..] if e.persisted() => {
                let seq: i64 = seq.parse().unwrap();
                assert!(seq > last_seq, "persisted id {id} after {last_seq}");
                assert_eq!(e.seq(), seq);
                last_seq = seq;
            }
            [seq, turn_seq, index] => {
                assert_eq!(seq.parse::<i64>().unwrap(), last_seq, "transient id {id}");
                let t = (turn_seq.parse().unwrap(), index.parse().unwrap());
                assert!(
                    last_transient < Some(t),
                    "transient id {id} after {last_transient:?}"
                );
                last_transient = Some(t);
            }
            _ => panic!("bad id {id}"),
        }
    }
}

#[tokio::test]
async fn resuming_from_every_event_after_the_turn() {
    let server = server().await;
    let conv = create(&server, json!({"title": "resume"})).await;
    let mut reference = Sse::open(&server, &conv, Some("1")).await;
    assert!(reference.replay().await.is_empty());
    let started = start_turn(
        &server,
        &conv,
        json!({"content": long_text(15), "model": "mock/slow:30"}),
    )
    .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let events = reference.until(|e| ends_turn(e, &turn_id)).await;
    check_ids_increase(&events);
    assert!(events.iter().filter(|e| e.transient()).count() >= 15);
    let text = assistant_text(&events);
    let before_assistant: Vec<Ev> = events
        .iter()
        .take_while(|e| e.event != "message.assistant")
        .cloned()
        .collect();
    assert_eq!(delta_text(&before_assistant), text);
    wait_turn(&server, &conv, &turn_id).await;
    let full = log(&server, &conv).await;
    assert_eq!(
        full[1..].to_vec(),
        events
            .iter()
            .filter(|e| e.persisted())
            .cloned()
            .collect::<Vec<_>>(),
        "the live persisted events equal the replayed log"
    );

    // Resume from every id seen: the rest of the log, once, with no
    // transient events (the turn is over; the log holds its text).
    let mut ids: Vec<String> = vec!["0".into(), "1".into()];
    ids.extend(events.iter().filter_map(|e| e.id.clone()));
    for (i, id) in ids.iter().enumerate() {
        let seq: i64 = id.split('.').next().unwrap().parse().unwrap();
        let expected: Vec<Ev> = full.iter().filter(|e| e.seq() > seq).cloned().collect();
        let mut sse = Sse::open(&server, &conv, Some(id)).await;
        let got = sse.replay().await;
        assert_eq!(got, expected, "resume from {id}");
        if i % 4 == 0 {
            // `?after=` is the same.
            let response = server
                .http
                .get(server.url(&format!("/v1/conversations/{conv}/events?after={id}")))
                .send()
                .await
                .unwrap();
            let got = Sse::new(response).replay().await;
            assert_eq!(got, expected, "after={id}");
        }
    }
    // Last-Event-ID wins over ?after=.
    let response = server
        .http
        .get(server.url(&format!("/v1/conversations/{conv}/events?after=0")))
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let got = Sse::new(response).replay().await;
    assert_eq!(got.first().map(Ev::seq), Some(4));

    // Bad ids: 400 problem.
    for bad in ["x", "1.2", "1.2.3.4", "-", "1.x.3", ""] {
        let (status, problem) = send(
            &server,
            "GET",
            &format!("/v1/conversations/{conv}/events?after={bad}"),
            None,
        )
        .await;
        if bad.is_empty() {
            // An empty `after` is not a position either.
            assert_eq!(status, 400, "after={bad:?}: {problem}");
            continue;
        }
        assert_eq!(status, 400, "after={bad:?}: {problem}");
        let response = server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/events")))
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "Last-Event-ID {bad:?}");
    }
    let (status, _) = send(&server, "GET", "/v1/conversations/nope/events", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn reconnecting_mid_turn_at_many_points_loses_and_repeats_nothing() {
    let server = server().await;
    let conv = create(&server, json!({})).await;
    let plans: Vec<Vec<usize>> = vec![
        vec![1],
        vec![2],
        vec![3],
        vec![5],
        vec![9],
        vec![14],
        vec![20],
        vec![1; 40],
        vec![2; 40],
        vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3],
        vec![7; 10],
    ];
    for (round, plan) in plans.iter().enumerate() {
        let from = get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"]
            .as_i64()
            .unwrap();
        let mut reference = Sse::open(&server, &conv, Some(&from.to_string())).await;
        assert!(reference.replay().await.is_empty());
        let (tx, rx) = tokio::sync::watch::channel(None::<String>);
        // The dropping subscriber starts before the turn too.
        let reader = {
            let server_url = server.base_url.clone();
            let conv = conv.clone();
            let plan = plan.clone();
            let from = from.to_string();
            let http = server.http.clone();
            tokio::spawn(async move {
                let shim = Shim {
                    base_url: server_url,
                    http,
                };
                read_with_drops(&shim, &conv, &from, &rx, &plan).await
            })
        };
        let started = start_turn(
            &server,
            &conv,
            json!({"content": long_text(25), "model": "mock/slow:30"}),
        )
        .await;
        let turn_id = started["turnId"].as_str().unwrap().to_owned();
        tx.send(Some(turn_id.clone())).unwrap();
        let expected = reference.until(|e| ends_turn(e, &turn_id)).await;
        let joined = tokio::time::timeout(LIMIT, reader)
            .await
            .expect("reader finishes")
            .expect("reader task");
        check_ids_increase(&joined);
        let persisted = |v: &[Ev]| {
            v.iter()
                .filter(|e| e.persisted())
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            persisted(&joined),
            persisted(&expected),
            "round {round} plan {plan:?}"
        );
        let before_assistant = |v: &[Ev]| {
            v.iter()
                .take_while(|e| e.event != "message.assistant")
                .cloned()
                .collect::<Vec<_>>()
        };
        let text = assistant_text(&expected);
        assert_eq!(delta_text(&before_assistant(&expected)), text);
        assert_eq!(
            delta_text(&before_assistant(&joined)),
            text,
            "round {round} plan {plan:?}: joined deltas"
        );
        // No coalescing here, so the transient events are identical too.
        assert_eq!(joined, expected, "round {round} plan {plan:?}");
    }
    log(&server, &conv).await;
}

// ------------------------------------------------------------------ 6. many subscribers

#[tokio::test]
async fn twenty_subscribers_see_the_same_sequence() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/slow:30"})).await;
    let mut tasks = Vec::new();
    let (tx, rx) = tokio::sync::watch::channel(None::<String>);
    for _ in 0..20 {
        let response = server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/events")))
            .send()
            .await
            .unwrap();
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut sse = Sse::new(response);
            let mut events = sse.replay().await;
            let mut rx = rx;
            let turn_id = rx.wait_for(Option::is_some).await.unwrap().clone().unwrap();
            events.extend(sse.until(|e| ends_turn(e, &turn_id)).await);
            events
        }));
    }
    let started = start_turn(&server, &conv, json!({"content": long_text(20)})).await;
    tx.send(Some(started["turnId"].as_str().unwrap().to_owned()))
        .unwrap();
    let mut all = Vec::new();
    for task in tasks {
        all.push(
            tokio::time::timeout(LIMIT, task)
                .await
                .expect("subscriber finishes")
                .unwrap(),
        );
    }
    let full = log(&server, &conv).await;
    for events in &all {
        check_ids_increase(events);
        let persisted: Vec<Ev> = events.iter().filter(|e| e.persisted()).cloned().collect();
        assert_eq!(persisted, full);
        assert_eq!(events, &all[0], "every subscriber saw the same events");
    }
    assert_eq!(
        delta_text(&all[0]),
        format!("echo: {}", long_text(20)),
        "deltas carry the whole answer"
    );
}

// ------------------------------------------------------------------ 7. invariants

#[tokio::test]
async fn a_conversation_is_created_with_everything_and_patched_field_by_field() {
    let server = server().await;

    // Create with everything; PATCH title and metadata.
    let (status, c) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "t0", "metadata": {"a": 1}, "cwd": "/srv", "reasoningEffort": "low"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["title"], "t0");
    assert_eq!(c["metadata"], json!({"a": 1}));
    assert_eq!(c["status"], "idle");
    assert_eq!(c["lastSeq"], 1);
    assert_eq!(c["usage"]["totalTokens"], 0);
    let (status, _) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"metadata": [1]})),
    )
    .await;
    assert_eq!(status, 422);

    let path = format!("/v1/conversations/{id}");
    let (status, c) = send(&server, "PATCH", &path, Some(json!({"title": "t1"}))).await;
    assert_eq!(status, 200);
    assert_eq!(
        (c["title"].clone(), c["metadata"].clone()),
        (json!("t1"), json!({"a": 1}))
    );
    let (status, c) = send(
        &server,
        "PATCH",
        &path,
        Some(json!({"metadata": {"b": [2]}})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (c["title"].clone(), c["metadata"].clone()),
        (json!("t1"), json!({"b": [2]}))
    );
    let (status, _) = send(&server, "PATCH", &path, Some(json!({"metadata": "x"}))).await;
    assert_eq!(status, 422);
    let (status, _) = send(&server, "PATCH", &path, Some(json!({"nope": 1}))).await;
    assert_eq!(status, 400);
    let (status, c) = send(&server, "PATCH", &path, Some(json!({}))).await;
    assert_eq!(status, 200);
    assert_eq!(c["lastSeq"], 3, "an empty patch appends nothing");
}

#[tokio::test]
async fn settings_are_read_patched_validated_and_sent_upstream() {
    let server = server().await;

    // Given a conversation created with a cwd and a reasoning effort.
    let (status, c) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"title": "t0", "metadata": {"a": 1}, "cwd": "/srv", "reasoningEffort": "low"})),
    )
    .await;
    assert_eq!(status, 201);
    let id = c["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/conversations/{id}");

    // Settings.
    let settings = format!("{path}/settings");
    let s = get(&server, &settings).await;
    assert_eq!(
        (
            &s["conversationId"],
            &s["cwd"],
            &s["reasoningEffort"],
            &s["advisor"]
        ),
        (&json!(id), &json!("/srv"), &json!("low"), &json!(false)),
        "{s}"
    );
    let (status, s) = send(
        &server,
        "PATCH",
        &settings,
        Some(json!({"cwd": "/work/x", "reasoningEffort": "high"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&s["conversationId"], &s["cwd"], &s["reasoningEffort"]),
        (&json!(id), &json!("/work/x"), &json!("high")),
        "{s}"
    );
    for bad in [
        json!({"reasoningEffort": "extreme"}),
        json!({"reasoningEffort": 3}),
        json!({"cwd": 1}),
        json!({"color": "red"}),
    ] {
        let (status, problem) = send(&server, "PATCH", &settings, Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad}: {problem}");
    }
    assert_eq!(get(&server, &settings).await["reasoningEffort"], "high");
    // A turn passes the effort upstream.
    run_turn(&server, &id, json!({"content": "hi", "model": "mock/echo"})).await;
    let req = server.mock.last_request().unwrap().json().unwrap();
    assert_eq!(req["reasoning_effort"], "high", "{req}");
    let (status, s) = send(
        &server,
        "PATCH",
        &settings,
        Some(json!({"reasoningEffort": null})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&s["cwd"], &s["reasoningEffort"]),
        (&json!("/work/x"), &Value::Null),
        "{s}"
    );
    run_turn(&server, &id, json!({"content": "hi again"})).await;
    let req = server.mock.last_request().unwrap().json().unwrap();
    assert!(req.get("reasoning_effort").is_none(), "{req}");
    let c = get(&server, &path).await;
    assert_eq!(c["cwd"], "/work/x");
    assert_eq!(c["reasoningEffort"], Value::Null);
}

#[tokio::test]
async fn subtasks_inherit_the_parent_model_and_list_under_it() {
    let server = server().await;

    // Given a parent conversation whose model a turn set to `mock/echo`.
    let id = create(&server, json!({"title": "parent"})).await;
    run_turn(&server, &id, json!({"content": "hi", "model": "mock/echo"})).await;

    // Subtasks inherit the parent's model.
    let (status, child) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"parentId": id, "title": "sub"})),
    )
    .await;
    assert_eq!(status, 201, "{child}");
    let child_id = child["id"].as_str().unwrap().to_owned();
    assert_eq!(child["parentId"], id.as_str());
    assert_eq!(child["model"], "mock/echo");
    let h = history(&server, &child_id).await;
    assert_eq!(h.len(), 1);
    assert_eq!(h[0]["source"], "parent");
    let (_, child_turn) = run_turn(&server, &child_id, json!({"content": "sub work"})).await;
    assert_eq!(child_turn["modelId"], "mock/echo");
    assert_eq!(child_turn["resolvedFrom"], "conversation");
    let (status, own) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"parentId": id, "model": "mock/mock-model"})),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(own["model"], "mock/mock-model", "an explicit model wins");
    let (status, problem) = send(
        &server,
        "POST",
        "/v1/conversations",
        Some(json!({"parentId": "no-such-parent"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let children = get(&server, &format!("/v1/conversations?parentId={id}")).await;
    let child_ids: Vec<&str> = children["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(child_ids.len(), 2);
    assert!(child_ids.contains(&child_id.as_str()));
}

#[tokio::test]
async fn conversations_page_newest_first_each_once() {
    let server = server().await;

    // Given 3 conversations (and the 5 below: 8 in all).
    for i in 0..3 {
        create(&server, json!({"title": format!("q{i}")})).await;
    }
    // Paging: every conversation once, newest first.
    for i in 0..5 {
        create(&server, json!({"title": format!("p{i}")})).await;
    }
    let mut seen: Vec<Value> = Vec::new();
    let mut before: Option<String> = None;
    for _ in 0..10 {
        let mut url = "/v1/conversations?limit=2".to_owned();
        if let Some(b) = &before {
            url.push_str(&format!("&before={b}"));
        }
        let page = get(&server, &url).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().cloned());
        match page["nextBefore"].as_str() {
            Some(next) => before = Some(next.to_owned()),
            None => break,
        }
    }
    let all = get(&server, "/v1/conversations?limit=200").await["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 8);
    let ids = |v: &[Value]| v.iter().map(|c| c["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&seen), ids(&all), "paged = unpaged");
    let times: Vec<&str> = all
        .iter()
        .map(|c| c["updatedAt"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    for bad in ["limit=0", "limit=201", "before=zzz", "bogus=1"] {
        let (status, _) = send(&server, "GET", &format!("/v1/conversations?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}");
    }
}

#[tokio::test]
async fn a_conversation_log_is_gap_free_and_its_last_seq_is_the_api_one() {
    let server = server().await;

    // Given a conversation with patches and two turns.
    let id = create(&server, json!({"title": "t0"})).await;
    let path = format!("/v1/conversations/{id}");
    let (status, _) = send(&server, "PATCH", &path, Some(json!({"title": "t1"}))).await;
    assert_eq!(status, 200);
    run_turn(&server, &id, json!({"content": "hi", "model": "mock/echo"})).await;
    run_turn(&server, &id, json!({"content": "hi again"})).await;

    // The log is gap-free and folds to what the API shows.
    let events = log(&server, &id).await;
    assert_eq!(get(&server, &path).await["lastSeq"], events.len() as i64);
}

#[tokio::test]
async fn a_deleted_conversation_ends_its_feed_is_404_everywhere_and_leaves_the_list() {
    let server = server().await;

    // Given 8 conversations, one of them with a turn and a live feed.
    let id = create(&server, json!({"title": "doomed"})).await;
    let path = format!("/v1/conversations/{id}");
    run_turn(&server, &id, json!({"content": "hi"})).await;
    for i in 0..7 {
        create(&server, json!({"title": format!("p{i}")})).await;
    }
    let events = log(&server, &id).await;

    // DELETE: 204, then 404 everywhere, hidden from the list.
    let mut watcher = Sse::open(&server, &id, Some(&events.len().to_string())).await;
    assert!(watcher.replay().await.is_empty());
    let (status, _) = send(&server, "DELETE", &path, None).await;
    assert_eq!(status, 204);
    let deleted = watcher.next_some().await;
    assert_eq!(deleted.event, "conversation.deleted");
    for sub in [
        "",
        "/messages",
        "/turns",
        "/model",
        "/settings",
        "/model-history",
        "/events",
    ] {
        let (status, _) = send(&server, "GET", &format!("{path}{sub}"), None).await;
        assert_eq!(status, 404, "GET {sub}");
    }
    let (status, _) = send(&server, "DELETE", &path, None).await;
    assert_eq!(status, 404);
    let (status, _) = send(&server, "PATCH", &path, Some(json!({"title": "x"}))).await;
    assert_eq!(status, 404);
    let (status, _) = send(
        &server,
        "POST",
        &format!("{path}/turns"),
        Some(json!({"content": "x"})),
    )
    .await;
    assert_eq!(status, 404);
    let all = get(&server, "/v1/conversations?limit=200").await["data"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|c| c["id"] != id.as_str()));
}

#[tokio::test]
async fn shutdown_interrupts_running_turns_and_restart_keeps_the_log() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/slow:100"})).await;
    let mut sse = Sse::open(&server, &conv, None).await;
    sse.replay().await;
    let started = start_turn(&server, &conv, json!({"content": long_text(40)})).await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let seen = sse
        .until(|e| delta_text(std::slice::from_ref(e)).contains("w1"))
        .await;
    let streamed = delta_text(&seen);
    // A subscriber is still connected while the server shuts down.
    let dir = tokio::time::timeout(LIMIT, server.shutdown())
        .await
        .expect("shutdown with an open events stream");
    drop(sse);

    let server = TestServer::builder().listed(LISTED).dir(dir).start().await;
    let turn = wait_turn(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "interrupted", "{turn}");
    let events = log(&server, &conv).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "turn.interrupted");
    let partial = last.data["partialText"].as_str().expect("partialText");
    assert!(partial.starts_with(&streamed), "{partial:?} / {streamed:?}");
    let (_, turn) = run_turn(
        &server,
        &conv,
        json!({"content": "next", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(turn["status"], "completed");
}

#[tokio::test]
async fn subscribers_joining_around_the_end_of_a_turn_see_all_or_none_of_its_deltas() {
    let server = server().await;
    let conv = create(&server, json!({"model": "mock/slow:1"})).await;
    let words = 30;
    let full_text = format!("echo: {}", long_text(words));
    let mut joined_mid_turn = 0;
    for _round in 0..30 {
        let started = start_turn(&server, &conv, json!({"content": long_text(words)})).await;
        let turn_id = started["turnId"].as_str().unwrap().to_owned();
        let mut readers = Vec::new();
        // Keep joining until a subscriber's replay already holds the end.
        loop {
            let response = server
                .http
                .get(server.url(&format!("/v1/conversations/{conv}/events")))
                .send()
                .await
                .unwrap();
            let mut sse = Sse::new(response);
            let replay = sse.replay().await;
            let ended = replay.iter().any(|e| ends_turn(e, &turn_id));
            let turn_id = turn_id.clone();
            readers.push(tokio::spawn(async move {
                let mut events = replay;
                if !events.iter().any(|e| ends_turn(e, &turn_id)) {
                    events.extend(sse.until(|e| ends_turn(e, &turn_id)).await);
                }
                events
            }));
            if ended {
                break;
            }
        }
        for reader in readers {
            let events = tokio::time::timeout(LIMIT, reader).await.unwrap().unwrap();
            check_ids_increase(&events);
            let turn_events: Vec<Ev> = events
                .iter()
                .filter(|e| e.data["turnId"] == turn_id.as_str())
                .cloned()
                .collect();
            let before_assistant: Vec<Ev> = turn_events
                .iter()
                .take_while(|e| e.event != "message.assistant")
                .cloned()
                .collect();
            let deltas = delta_text(&before_assistant);
            assert!(
                deltas.is_empty() || deltas == full_text,
                "a subscriber saw part of the turn's deltas: {deltas:?}"
            );
            assert_eq!(
                turn_events
                    .iter()
                    .filter(|e| e.event == "text.delta")
                    .count(),
                before_assistant
                    .iter()
                    .filter(|e| e.event == "text.delta")
                    .count(),
                "no delta after message.assistant"
            );
            if !deltas.is_empty() {
                joined_mid_turn += 1;
            }
        }
    }
    assert!(joined_mid_turn > 0, "some subscribers joined mid-turn");
}
