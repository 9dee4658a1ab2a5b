//! `POST /v1/arena`: one prompt, several models side by side — the JSON
//! answer, the SSE feed (deltas of every model interleaved, each model's
//! end), one failing model not stopping the others, validation problems,
//! and the one `arena` LLM session holding a call per model.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::conv::Sse;
use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

/// Every event of a streamed arena run, up to and including `arena.done`.
async fn feed(server: &TestServer, body: Value) -> Vec<common::conv::Ev> {
    let response = server
        .http
        .post(server.url("/v1/arena"))
        .json(&body)
        .send()
        .await
        .unwrap();
    if response.status() != 200 {
        let status = response.status();
        panic!("{status}: {}", response.text().await.unwrap());
    }
    let mut sse = Sse::new(response);
    let events = sse.until(|e| e.event == "arena.done").await;
    assert!(sse.next().await.is_none(), "nothing after arena.done");
    events
}

/// The chat completion bodies the mock received.
fn chat_bodies(server: &TestServer) -> Vec<Value> {
    server
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn answers_every_model_in_request_order() {
    let server = TestServer::start().await;
    let (status, answer) = server
        .post(
            "/v1/arena",
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "hello arena",
                   "options": {"temperature": 0.5}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["id"].is_string(), "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (result, model) in results.iter().zip(["mock/echo", "mock/mock-model"]) {
        assert_eq!(result["model"], model, "{result}");
        assert_eq!(result["status"], "completed", "{result}");
        assert_eq!(result["text"], "echo: hello arena", "{result}");
        assert_eq!(result["usage"]["promptTokens"], 2, "{result}");
        assert_eq!(result["usage"]["completionTokens"], 3, "{result}");
        assert_eq!(result["usage"]["totalTokens"], 5, "{result}");
        assert!(result["ttftMs"].as_i64().unwrap() >= 0, "{result}");
        assert!(result["durationMs"].as_i64().unwrap() >= 0, "{result}");
        assert_eq!(result["error"], Value::Null, "{result}");
    }
    // Both upstream requests carried the options and the one user message.
    let chats = chat_bodies(&server);
    assert_eq!(chats.len(), 2, "{chats:?}");
    for body in &chats {
        assert_eq!(body["temperature"], 0.5, "{body}");
        assert_eq!(
            body["messages"],
            json!([{"role": "user", "content": "hello arena"}])
        );
    }
}

#[tokio::test]
async fn streams_interleaved_deltas_naming_their_model() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:30", "slow:45"])
        .start()
        .await;
    let models = ["mock/slow:30", "mock/slow:45"];
    let events = feed(
        &server,
        json!({"models": models, "stream": true,
               "messages": [{"role": "user", "content": "one two three four five"}]}),
    )
    .await;
    let done = events.last().unwrap();
    assert_eq!(done.event, "arena.done");
    assert!(done.data["id"].is_string(), "{:?}", done);

    let deltas: Vec<&common::conv::Ev> =
        events.iter().filter(|e| e.event == "arena.delta").collect();
    let order: Vec<i64> = deltas
        .iter()
        .map(|e| e.data["index"].as_i64().unwrap())
        .collect();
    let last_of = |i: i64| order.iter().rposition(|x| *x == i).unwrap();
    let first_of = |i: i64| order.iter().position(|x| *x == i).unwrap();
    assert!(
        first_of(1) < last_of(0) && first_of(0) < last_of(1),
        "deltas interleave: {order:?}"
    );
    let mut joined: BTreeMap<i64, String> = BTreeMap::new();
    for e in &deltas {
        let index = e.data["index"].as_i64().unwrap();
        assert_eq!(e.data["model"], models[index as usize], "{:?}", e);
        joined
            .entry(index)
            .or_default()
            .push_str(e.data["delta"].as_str().unwrap());
    }
    let completed: Vec<&common::conv::Ev> = events
        .iter()
        .filter(|e| e.event == "arena.completed")
        .collect();
    assert_eq!(completed.len(), 2, "{events:?}");
    for e in completed {
        let index = e.data["index"].as_i64().unwrap();
        assert_eq!(e.data["model"], models[index as usize]);
        assert_eq!(e.data["text"], "echo: one two three four five");
        assert_eq!(e.data["text"].as_str().unwrap(), joined[&index]);
        assert_eq!(e.data["usage"]["completionTokens"], 6, "{:?}", e);
        assert!(e.data["ttftMs"].as_i64().is_some(), "{:?}", e);
        assert!(e.data["durationMs"].as_i64().is_some(), "{:?}", e);
    }
}

#[tokio::test]
async fn one_failing_model_does_not_stop_the_other() {
    let server = TestServer::builder()
        .listed(&["echo", "status:400"])
        .start()
        .await;
    let events = feed(
        &server,
        json!({"models": ["mock/status:400", "mock/echo"], "prompt": "still here",
               "stream": true}),
    )
    .await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.event == "arena.failed")
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].data["model"], "mock/status:400");
    assert_eq!(failed[0].data["index"], 0);
    assert!(
        failed[0].data["error"].as_str().unwrap().contains("400"),
        "{:?}",
        failed[0]
    );
    let completed: Vec<_> = events
        .iter()
        .filter(|e| e.event == "arena.completed")
        .collect();
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0].data["model"], "mock/echo");
    assert_eq!(completed[0].data["text"], "echo: still here");

    // The JSON answer says the same.
    let (status, answer) = server
        .post(
            "/v1/arena",
            json!({"models": ["mock/echo", "mock/status:400"], "prompt": "x"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"][0]["status"], "completed", "{answer}");
    assert_eq!(answer["results"][1]["status"], "failed", "{answer}");
    assert!(answer["results"][1]["error"].is_string(), "{answer}");
}

#[tokio::test]
async fn invalid_requests_are_problems_naming_the_field() {
    let server = TestServer::start().await;
    let cases = [
        (json!({"models": ["mock/echo"], "prompt": "x"}), "models"),
        (
            json!({"models": ["mock/a", "mock/b", "mock/c", "mock/d", "mock/e",
                              "mock/f", "mock/g", "mock/h", "mock/i"], "prompt": "x"}),
            "models",
        ),
        (
            json!({"models": ["mock/echo", "mock/echo"], "prompt": "x"}),
            "models",
        ),
        (
            json!({"models": ["mock/echo", "mock/mock-model"]}),
            "messages",
        ),
        (
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "x",
                   "messages": [{"role": "user", "content": "x"}]}),
            "prompt",
        ),
        // The gateway's [limits] caps hold for every model of the run.
        (
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "x",
                   "options": {"n": 1000}}),
            "options.n",
        ),
        (
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "x",
                   "options": {"max_tokens": 1_000_000_000u64}}),
            "options.max_tokens",
        ),
    ];
    for (body, field) in cases {
        let problem = server
            .problem(
                "POST",
                "/v1/arena",
                Some(body.clone()),
                422,
                "invalid_field",
            )
            .await;
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    let problem = server
        .problem(
            "POST",
            "/v1/arena",
            Some(json!({"models": ["mock/echo", "nowhere/model"], "prompt": "x"})),
            422,
            "model_not_found",
        )
        .await;
    assert_eq!(problem["field"], "models", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("nowhere/model"),
        "{problem}"
    );
    // Nothing was sent upstream.
    assert!(
        chat_bodies(&server).is_empty(),
        "no chat request for an invalid arena"
    );
}

#[tokio::test]
async fn one_arena_session_holds_a_call_per_model() {
    let server = TestServer::start().await;
    let (status, answer) = server
        .post(
            "/v1/arena",
            json!({"models": ["mock/echo", "mock/mock-model", "mock/reasoning"],
                   "prompt": "count me"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let sessions = eventually(LIMIT, "the arena session", || async {
        let page = server.get_ok("/v1/llm-sessions?operation=arena").await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            Err(page)
        } else {
            Ok(data)
        }
    })
    .await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0]["id"], id.as_str());
    assert_eq!(sessions[0]["operation"], "arena");
    assert_eq!(sessions[0]["callCount"], 3, "{}", sessions[0]);
    let detail = server.get_ok(&format!("/v1/llm-sessions/{id}")).await;
    let mut models: Vec<String> = detail["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["modelId"].as_str().unwrap().to_owned())
        .collect();
    models.sort();
    assert_eq!(
        models,
        ["mock/echo", "mock/mock-model", "mock/reasoning"],
        "{detail}"
    );
}

#[tokio::test]
async fn an_llm_config_supplies_options_and_system_prompt_under_the_request_options() {
    let server = TestServer::start().await;
    let (status, cfg) = server
        .post(
            "/v1/llms",
            json!({"model": "mock/mock-model", "systemPrompt": "ARENA PROMPT",
                   "providerOptions": {"temperature": 0.4, "maxTokens": 33}}),
        )
        .await;
    assert_eq!(status, 201, "{cfg}");
    let (status, answer) = server
        .post(
            "/v1/arena",
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "hi",
                   "llmId": cfg["id"], "options": {"temperature": 1.0}}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let chats = chat_bodies(&server);
    assert_eq!(chats.len(), 2, "{chats:?}");
    for body in &chats {
        assert_eq!(
            body["temperature"], 1.0,
            "the request's option wins: {body}"
        );
        assert_eq!(body["max_tokens"], 33, "{body}");
        assert_eq!(
            body["messages"],
            json!([{"role": "system", "content": "ARENA PROMPT"},
                   {"role": "user", "content": "hi"}])
        );
    }
    let problem = server
        .problem(
            "POST",
            "/v1/arena",
            Some(
                json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "hi",
                        "llmId": "0190b6d4-0000-7000-8000-000000000000"}),
            ),
            422,
            "invalid_field",
        )
        .await;
    assert_eq!(problem["field"], "llmId", "{problem}");
}

#[tokio::test]
async fn a_streamed_arena_takes_a_stream_slot() {
    let server = TestServer::builder()
        .extra("[limits]\nmax_streams_per_key = 1\n")
        .start()
        .await;
    let body = json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "hello"});
    // An open events feed holds the caller's only stream slot.
    let (status, conv) = server.post("/v1/conversations", json!({})).await;
    assert_eq!(status, 201, "{conv}");
    let conv = conv["id"].as_str().unwrap().to_owned();
    let mut held = Sse::open(&server, &conv, None).await;
    held.replay().await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let refused = server
        .http
        .post(server.url("/v1/arena"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("max_streams_per_key"),
        "{problem}"
    );
    assert!(chat_bodies(&server).is_empty(), "nothing sent upstream");
    // The JSON answer is no stream.
    let (status, answer) = server.post("/v1/arena", body).await;
    assert_eq!(status, 200, "{answer}");
    // Once the feed is gone, the slot is free again.
    drop(held);
    let events = eventually(Duration::from_secs(5), "the slot freed", || async {
        let response = server
            .http
            .post(server.url("/v1/arena"))
            .json(&streamed)
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            let mut sse = Sse::new(response);
            Ok(sse.until(|e| e.event == "arena.done").await)
        } else {
            Err(response.status())
        }
    })
    .await;
    assert_eq!(events.last().unwrap().event, "arena.done");
    server.shutdown().await;
}
