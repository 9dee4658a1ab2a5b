//! Turns that fit the model's context window (`[turns] context_strategy`),
//! against a mock upstream that refuses, like llama.cpp, a prompt that
//! reaches its model's window (`MockUpstream::set_enforce_context`): with
//! each strategy a long conversation never reaches the upstream's context
//! error; the conversation shows `contextTokens` and `contextWindow`.
//!
//! The mock counts a prompt's tokens as the words of its messages; each
//! turn here adds a 40-word question and its 41-word echo.

#![allow(clippy::unwrap_used)]

mod common;

use common::conv::*;
use common::{named_mock_url, TestServer};
use modelyard_testkit::{Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

/// The mock model's context window, tokens (words).
const WINDOW: u64 = 400;
/// `[turns] output_reserve_tokens` of these tests.
const RESERVE: u64 = 100;

/// A server whose provider `small` (kind `kind`) serves the mock's `echo`,
/// which refuses a prompt of 400 words or more; `[turns]` gets `turns`.
/// A `llama-cpp` provider reports the window and counts tokens with the
/// mock's `/tokenize`; an `openai` one reports neither (the mock speaks
/// the plain OpenAI flavour), unless `provider_extra` declares the window.
async fn server(kind: &str, provider_extra: &str, turns: &str) -> TestServer {
    let flavour = if kind == "llama-cpp" {
        Flavour::LlamaCpp
    } else {
        Flavour::OpenAi
    };
    let mock = MockOptions::new(flavour, vec![MockModel::new("echo", Some(WINDOW))]);
    let server = TestServer::builder()
        .mock("small", mock)
        .providers(&format!(
            "[[providers]]\nname = \"small\"\nkind = \"{kind}\"\nbase_url = \"{}\"\n{provider_extra}\n",
            named_mock_url("small")
        ))
        .extra(&format!(
            "[defaults]\nmodel = \"small/echo\"\n\n[turns]\noutput_reserve_tokens = {RESERVE}\n{turns}\n"
        ))
        .start()
        .await;
    server.named("small").set_enforce_context(true);
    server
}

/// A 40-word question, different for each `n`.
fn question(n: usize) -> String {
    (0..40)
        .map(|i| format!("q{n}w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A conversation on `small/echo` whose compactions answer at most 20
/// words (an LLM config for `compaction` with `maxTokens`).
async fn conversation(server: &TestServer) -> String {
    let (status, config) = send(
        server,
        "POST",
        "/v1/llms",
        Some(
            json!({"displayName": "short summaries", "model": "small/echo",
                    "providerOptions": {"maxTokens": 20}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{config}");
    create(
        server,
        json!({"model": "small/echo", "llmOverrides": {"compaction": config["id"]}}),
    )
    .await
}

/// Words of a chat request's messages: the mock's prompt tokens.
fn prompt_words(request: &Value) -> u64 {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => s.split_whitespace().count() as u64,
            _ => 0,
        })
        .sum()
}

/// The chat requests the mock received (streamed turns; compactions are
/// not streamed).
fn chat_requests(server: &TestServer) -> Vec<Value> {
    server
        .named("small")
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json())
        .collect()
}

fn compactions(events: &[Ev]) -> usize {
    events
        .iter()
        .filter(|e| e.event == "conversation.compacted")
        .count()
}

#[tokio::test]
async fn compact_summarizes_automatically_and_no_request_reaches_the_upstream_limit() {
    let server = server("llama-cpp", "", "").await;
    let conv = conversation(&server).await;
    for n in 0..8 {
        let (_, turn) = run_turn(&server, &conv, json!({"content": question(n)})).await;
        assert_eq!(turn["status"], "completed", "turn {n}: {turn}");
    }
    // At least one automatic compaction, recorded like a manual one.
    let events = log(&server, &conv).await;
    assert!(compactions(&events) >= 1, "{events:#?}");
    let compacted = events
        .iter()
        .find(|e| e.event == "conversation.compacted")
        .unwrap();
    assert_eq!(compacted.data["modelId"], "small/echo");
    let sessions = get(
        &server,
        &format!("/v1/llm-sessions?conversationId={conv}&limit=100"),
    )
    .await;
    let operations: Vec<&str> = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["operation"].as_str().unwrap())
        .collect();
    assert!(operations.contains(&"compaction"), "{operations:?}");
    // Every request fit: none reached the window, so the upstream never
    // answered its context error; each fit the window minus the reserve.
    let requests = chat_requests(&server);
    assert!(requests.len() >= 9, "{} requests", requests.len());
    for request in &requests {
        let words = prompt_words(request);
        assert!(words <= WINDOW - RESERVE, "{words} words: {request}");
    }
    // Later turns send the summary in place of the covered messages.
    let last = requests
        .iter()
        .rev()
        .find(|r| r.get("stream") == Some(&json!(true)))
        .unwrap();
    assert!(
        last["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("Summary of the earlier conversation: "),
        "{last}"
    );
    assert_eq!(
        last["messages"].as_array().unwrap().last().unwrap()["content"],
        question(7)
    );
    // The conversation shows its last context size and its window.
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["contextWindow"], WINDOW, "{c}");
    let messages = messages(&server, &conv).await;
    let last_answer = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "assistant")
        .unwrap();
    assert_eq!(
        c["contextTokens"], last_answer["usage"]["promptTokens"],
        "{c}"
    );
    assert_eq!(c["contextTokens"].as_u64().unwrap(), prompt_words(last));
    let listed = get(&server, "/v1/conversations").await;
    assert_eq!(listed["data"][0]["contextWindow"], WINDOW, "{listed}");
}

#[tokio::test]
async fn without_a_known_window_nothing_changes_and_the_upstream_refuses_in_the_end() {
    // The same conversation on a plain OpenAI-compatible kind that reports
    // no window: nothing is estimated or compacted, and the mock's context
    // error fails a turn (what the strategies prevent).
    let server = server("openai", "", "").await;
    let conv = conversation(&server).await;
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["contextWindow"], Value::Null, "{c}");
    assert_eq!(c["contextTokens"], Value::Null, "{c}");
    let mut failed = None;
    for n in 0..8 {
        let (_, turn) = run_turn(&server, &conv, json!({"content": question(n)})).await;
        if turn["status"] != "completed" {
            failed = Some(turn);
            break;
        }
    }
    let turn = failed.expect("a turn fails once the history passes the window");
    assert_eq!(turn["status"], "failed", "{turn}");
    assert!(
        turn["error"].as_str().unwrap().contains("context size"),
        "{turn}"
    );
    assert_eq!(compactions(&log(&server, &conv).await), 0);
}

#[tokio::test]
async fn truncate_leaves_the_oldest_messages_out_and_keeps_the_last_question() {
    // An openai kind (no tokenizer) with the window declared in the config:
    // estimates are calibrated from the reported prompt sizes.
    let server = server(
        "openai",
        "models = [{ id = \"echo\", context_window = 400 }]",
        "context_strategy = \"truncate\"",
    )
    .await;
    let conv = conversation(&server).await;
    for n in 0..8 {
        let (_, turn) = run_turn(&server, &conv, json!({"content": question(n)})).await;
        assert_eq!(turn["status"], "completed", "turn {n}: {turn}");
    }
    let events = log(&server, &conv).await;
    assert_eq!(compactions(&events), 0, "truncate never compacts");
    // Nothing was dropped from the conversation itself.
    assert_eq!(messages(&server, &conv).await.len(), 16);
    let requests = chat_requests(&server);
    assert_eq!(requests.len(), 8);
    for request in &requests {
        assert!(prompt_words(request) < WINDOW, "{request}");
    }
    // The last request left the oldest messages out, whole, and kept the
    // last question.
    let last = requests.last().unwrap();
    let sent = last["messages"].as_array().unwrap();
    assert!(sent.len() < 15, "{} messages sent", sent.len());
    assert_eq!(sent.last().unwrap()["content"], question(7));
    let contents: Vec<String> = sent
        .iter()
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert!(!contents.iter().any(|c| c.contains("q0w0")), "{contents:?}");
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}")).await["contextWindow"],
        WINDOW
    );
}

#[tokio::test]
async fn error_refuses_the_turn_with_the_numbers_and_appends_nothing() {
    let server = server("llama-cpp", "", "context_strategy = \"error\"").await;
    let conv = conversation(&server).await;
    let mut refused = None;
    for n in 0..8 {
        let before = get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"].clone();
        let (status, body) = send(
            &server,
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": question(n)})),
        )
        .await;
        if status == 202 {
            let turn = wait_turn(&server, &conv, body["turnId"].as_str().unwrap()).await;
            assert_eq!(turn["status"], "completed", "{turn}");
            continue;
        }
        let after = get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"].clone();
        assert_eq!(before, after, "nothing appended");
        refused = Some((n, body));
        break;
    }
    let (n, problem) = refused.expect("a turn is refused once the history passes the budget");
    assert!(n >= 2, "the first turns fit: refused at {n}");
    assert_eq!(problem["status"], 422, "{problem}");
    assert_eq!(problem["code"], "context_length_exceeded", "{problem}");
    assert_eq!(problem["contextWindow"], WINDOW);
    assert_eq!(problem["outputReserveTokens"], RESERVE);
    let estimated = problem["estimatedTokens"].as_u64().unwrap();
    assert!(estimated > WINDOW - RESERVE, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&estimated.to_string()),
        "{problem}"
    );
    for request in chat_requests(&server) {
        assert!(prompt_words(&request) < WINDOW, "{request}");
    }
}

#[tokio::test]
async fn a_chat_turn_sets_the_context_size_and_other_operations_leave_it() {
    let server = server("llama-cpp", "", "").await;
    let conv = conversation(&server).await;
    run_turn(&server, &conv, json!({"content": question(0)})).await;
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    let size = c["contextTokens"].as_u64().unwrap();
    assert_eq!(size, 40, "{c}");
    // A turn of another operation does not change it.
    run_turn(
        &server,
        &conv,
        json!({"content": question(1), "operation": "summarize", "model": "small/echo"}),
    )
    .await;
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["contextTokens"].as_u64().unwrap(), size, "{c}");
}
