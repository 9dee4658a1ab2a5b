//! End-to-end tests of tools in turns against the mock upstream: the
//! advisor (a server-side tool consulting another model, streamed live as
//! `advisor.phase` / `advisor.output`), client tools with `requires_action`
//! and `tool-results`, limits, failures, cancel, reconnects and the
//! transient buffer cap.
//!
//! The chat model is the mock's `tool-call:<name>[*n][@ms]` behaviour: it
//! calls `<name>` with `{"question": <last user text>}` until the turn has
//! `n` tool results, then answers `tool said: <last tool result>`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::conv::*;
use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

const LISTED: &[&str] = &[
    "mock-model",
    "echo",
    "slow:5",
    "slow:20",
    "slow:300",
    "status:500",
    "tool-call:advisor",
    "tool-call:advisor*3",
    "tool-call:advisor@30",
    "tool-call:get_weather",
    "tool-call:nonexistent",
];

async fn server_with(extra: &str) -> TestServer {
    TestServer::builder()
        .listed(LISTED)
        .extra(&format!("[defaults]\nmodel = \"mock/mock-model\"\n{extra}"))
        .start()
        .await
}

/// A user LLM config for `model`; returns its id.
async fn llm(server: &TestServer, model: &str) -> String {
    let (status, body) = send(
        server,
        "POST",
        "/v1/llms",
        Some(json!({"displayName": format!("advisor {model}"), "model": model})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// A conversation with the advisor on, whose advisor model is `advisor`.
async fn advised(server: &TestServer, advisor_model: &str) -> String {
    let config = llm(server, advisor_model).await;
    create(
        server,
        json!({"advisor": true, "llmOverrides": {"advisor": config}}),
    )
    .await
}

/// Runs a turn and returns every event from its start to its end, read by a
/// subscriber that joined before it.
async fn turn_events(server: &TestServer, conv: &str, body: Value) -> (String, Vec<Ev>) {
    let from = get(server, &format!("/v1/conversations/{conv}")).await["lastSeq"]
        .as_i64()
        .unwrap();
    let mut sse = Sse::open(server, conv, Some(&from.to_string())).await;
    assert!(sse.replay().await.is_empty());
    let started = start_turn(server, conv, body).await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let events = sse.until(|e| ends_run(e, &turn_id)).await;
    (turn_id, events)
}

/// The end of a turn's run: its end, or `turn.requires_action`.
fn ends_run(e: &Ev, turn_id: &str) -> bool {
    ends_turn(e, turn_id) || (e.event == "turn.requires_action" && e.data["turnId"] == turn_id)
}

fn kinds(events: &[Ev]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let kind = match e.event.as_str() {
            "advisor.phase" => format!("advisor.phase:{}", e.data["phase"].as_str().unwrap()),
            other => other.to_owned(),
        };
        // Runs of deltas count once.
        if out.last() != Some(&kind) || !kind.ends_with("delta") && kind != "advisor.output" {
            out.push(kind);
        }
    }
    out
}

fn tool_messages(events: &[Ev]) -> Vec<&Ev> {
    events
        .iter()
        .filter(|e| e.event == "message.tool")
        .collect()
}

fn advisor_output(events: &[Ev], call: &str) -> String {
    events
        .iter()
        .filter(|e| e.event == "advisor.output" && e.data["toolCallId"] == call)
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect()
}

async fn sessions(server: &TestServer, conv: &str, n: usize) -> Vec<Value> {
    eventually(LIMIT, &format!("{n} sessions"), || async move {
        let body = get(
            server,
            &format!("/v1/llm-sessions?conversationId={conv}&limit=100"),
        )
        .await;
        let data = body["data"].as_array().unwrap().clone();
        if data.len() >= n {
            Ok(data)
        } else {
            Err(body)
        }
    })
    .await
}

fn usage_of(v: &Value) -> (i64, i64) {
    (
        v["promptTokens"].as_i64().unwrap(),
        v["completionTokens"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn the_advisor_streams_live_and_its_result_does_not_depend_on_watchers() {
    let server = server_with("").await;
    let question = "How should I sort a long list of names?";
    let body = json!({"content": question, "model": "mock/tool-call:advisor"});

    // Watched conversation.
    let watched = advised(&server, "mock/slow:5").await;
    let (turn_id, events) = turn_events(&server, &watched, body.clone()).await;
    assert_eq!(
        events.last().unwrap().event,
        "turn.completed",
        "{events:#?}"
    );
    let kinds = kinds(&events);
    let expected = [
        "model.selected",
        "turn.started",
        "message.user",
        "tool_call.started",
        "tool_call.delta",
        "message.assistant",
        "advisor.phase:preparing_context",
        "advisor.phase:waiting_for_response",
        "advisor.phase:streaming",
        "advisor.output",
        "advisor.phase:finalizing_result",
        "message.tool",
        "tool_call.completed",
        "text.delta",
        "message.assistant",
        "turn.completed",
    ];
    assert_eq!(kinds, expected, "{events:#?}");
    let started = events
        .iter()
        .find(|e| e.event == "tool_call.started")
        .unwrap();
    assert_eq!(started.data["name"], "advisor");
    let call = started.data["toolCallId"].as_str().unwrap().to_owned();
    let arguments: String = events
        .iter()
        .filter(|e| e.event == "tool_call.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"question": question})
    );
    assert!(events
        .iter()
        .filter(|e| e.event.starts_with("advisor."))
        .all(|e| e.data["toolCallId"] == call.as_str() && e.data["turnId"] == turn_id.as_str()));
    // Many live deltas, which join into exactly the persisted advice.
    let outputs = events
        .iter()
        .filter(|e| e.event == "advisor.output")
        .count();
    assert!(outputs > 5, "{outputs} advisor.output events");
    let tool = tool_messages(&events)[0];
    assert_eq!(tool.data["toolCallId"], call.as_str());
    assert_eq!(tool.data["name"], "advisor");
    assert_eq!(tool.data["isError"], false);
    assert_eq!(tool.data["modelId"], "mock/slow:5");
    let result: Value = serde_json::from_str(tool.data["content"].as_str().unwrap()).unwrap();
    let mut keys: Vec<&String> = result.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "advice",
            "advisorModel",
            "reasoningLevel",
            "remainingUses",
            "type"
        ],
        "{result}"
    );
    // The advisor's config sets no reasoning effort: null.
    assert_eq!(result["reasoningLevel"], Value::Null, "{result}");
    assert_eq!(result["type"], "advice");
    assert_eq!(result["advisorModel"], "mock/slow:5");
    assert_eq!(result["remainingUses"], 2);
    let advice = result["advice"].as_str().unwrap();
    assert_eq!(advisor_output(&events, &call), advice);
    // The advisor saw the conversation and the question.
    assert!(advice.starts_with("echo: Conversation so far:"), "{advice}");
    assert!(advice.contains(question), "{advice}");
    // The chat model received exactly the persisted result.
    let chat_requests: Vec<Value> = server
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .filter(|r| r["model"] == "tool-call:advisor")
        .collect();
    let second = chat_requests.last().unwrap();
    assert_eq!(
        second["tools"][0]["function"]["name"], "advisor",
        "{second}"
    );
    let sent_tool = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert_eq!(sent_tool["tool_call_id"], call.as_str());
    assert_eq!(sent_tool["content"], tool.data["content"]);

    // The same turn with nobody watching gives the same tool result.
    let unwatched = advised(&server, "mock/slow:5").await;
    let started = start_turn(&server, &unwatched, body).await;
    let turn = wait_turn(&server, &unwatched, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let msgs = messages(&server, &unwatched).await;
    let tool_b = msgs.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(tool_b["content"], tool.data["content"]);

    // Usage: the turn and the conversation add the advisor's tokens; the
    // advisor model has its own share; its session is a child of the turn's.
    let msgs = messages(&server, &watched).await;
    let mut sum = (0, 0);
    for m in msgs.iter().filter(|m| m["role"] != "user") {
        sum.0 += m["usage"]["promptTokens"].as_i64().unwrap_or(0);
        sum.1 += m["usage"]["completionTokens"].as_i64().unwrap_or(0);
    }
    let advisor_usage = &msgs.iter().find(|m| m["role"] == "tool").unwrap()["usage"];
    assert!(advisor_usage["promptTokens"].as_i64().unwrap() > 0);
    let c = get(&server, &format!("/v1/conversations/{watched}")).await;
    assert_eq!(usage_of(&c["usage"]), sum, "{c}");
    let turns = get(&server, &format!("/v1/conversations/{watched}/turns")).await;
    let turn_usage = &turns["data"][0]["usage"];
    assert_eq!(
        (
            turn_usage["promptTokens"].as_i64().unwrap(),
            turn_usage["completionTokens"].as_i64().unwrap()
        ),
        sum,
        "{turns}"
    );
    let sessions = sessions(&server, &watched, 2).await;
    let chat = sessions.iter().find(|s| s["operation"] == "chat").unwrap();
    let advisor = sessions
        .iter()
        .find(|s| s["operation"] == "advisor")
        .unwrap();
    assert_eq!(chat["id"], turn_id.as_str());
    assert_eq!(chat["callCount"], 2);
    assert_eq!(advisor["parentSessionId"], turn_id.as_str());
    assert_eq!(advisor["turnId"], turn_id.as_str());
    assert_eq!(advisor["modelId"], "mock/slow:5");
    assert_eq!(
        usage_of(&advisor["usage"]),
        (
            advisor_usage["promptTokens"].as_i64().unwrap(),
            advisor_usage["completionTokens"].as_i64().unwrap()
        )
    );
    let children = get(&server, &format!("/v1/llm-sessions/{turn_id}")).await;
    assert!(children
        .to_string()
        .contains(advisor["id"].as_str().unwrap()));
    let by_model = get(&server, "/v1/usage?groupBy=model").await;
    let row = by_model["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "mock/slow:5")
        .unwrap_or_else(|| panic!("advisor model row: {by_model}"));
    // Two conversations consulted it once each.
    assert_eq!(
        row["promptTokens"].as_i64().unwrap(),
        2 * advisor_usage["promptTokens"].as_i64().unwrap()
    );
    log(&server, &watched).await;
}

#[tokio::test]
async fn reconnecting_mid_advice_joins_to_what_a_steady_subscriber_saw() {
    let server = server_with("").await;
    let plans: Vec<Vec<usize>> = vec![
        vec![3],
        vec![6],
        vec![8],
        vec![10],
        vec![14],
        vec![2; 30],
        vec![5, 1, 7, 2, 9],
    ];
    for (round, plan) in plans.iter().enumerate() {
        // A fresh conversation each round keeps the advice short.
        let conv = advised(&server, "mock/slow:20").await;
        let from = get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"]
            .as_i64()
            .unwrap();
        let mut reference = Sse::open(&server, &conv, Some(&from.to_string())).await;
        assert!(reference.replay().await.is_empty());
        let (tx, rx) = tokio::sync::watch::channel(None::<String>);
        let reader = {
            let shim = Shim {
                base_url: server.base_url.clone(),
                http: server.http.clone(),
            };
            let conv = conv.clone();
            let plan = plan.clone();
            let from = from.to_string();
            tokio::spawn(async move { read_with_drops(&shim, &conv, &from, &rx, &plan).await })
        };
        let started = start_turn(
            &server,
            &conv,
            json!({"content": format!("round {round}: advise me"), "model": "mock/tool-call:advisor@30"}),
        )
        .await;
        let turn_id = started["turnId"].as_str().unwrap().to_owned();
        tx.send(Some(turn_id.clone())).unwrap();
        let expected = reference.until(|e| ends_turn(e, &turn_id)).await;
        let joined = tokio::time::timeout(LIMIT, reader)
            .await
            .expect("reader finishes")
            .expect("reader task");
        if let Some(i) =
            (0..joined.len().max(expected.len())).find(|&i| joined.get(i) != expected.get(i))
        {
            panic!(
                "round {round} plan {plan:?}: first difference at {i}:\n joined {:?}\n expected {:?}\n before {:?}",
                joined.get(i),
                expected.get(i),
                &expected[i.saturating_sub(2)..i]
            );
        }
        let call = tool_messages(&expected)[0].data["toolCallId"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(!advisor_output(&joined, &call).is_empty());
    }
}

#[tokio::test]
async fn cancelling_during_the_advice_closes_the_advisor_request() {
    let server = server_with("").await;
    let conv = advised(&server, "mock/slow:300").await;
    let mut sse = Sse::open(&server, &conv, None).await;
    sse.replay().await;
    let started = start_turn(
        &server,
        &conv,
        json!({"content": "a b c d e f g h", "model": "mock/tool-call:advisor"}),
    )
    .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    sse.until(|e| e.event == "advisor.output").await;
    let cancelled_before = server.mock.cancelled_streams();
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert!(
        server
            .mock
            .wait_cancelled(cancelled_before + 1, Duration::from_secs(1))
            .await,
        "the advisor's upstream stream is closed within a second"
    );
    let rest = sse.until(|e| ends_turn(e, &turn_id)).await;
    assert_eq!(rest.last().unwrap().event, "turn.cancelled");
    let tool = tool_messages(&rest)[0];
    assert_eq!(tool.data["isError"], true);
    assert!(tool.data["content"].as_str().unwrap().contains("stopped"));
    let turn = wait_turn(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "cancelled");
    assert_eq!(server.mock.in_flight(), 0, "nothing left running upstream");
    let sessions = sessions(&server, &conv, 2).await;
    let advisor = sessions
        .iter()
        .find(|s| s["operation"] == "advisor")
        .unwrap();
    assert_eq!(advisor["status"], "error", "{advisor}");
    // The conversation goes on: the unanswered history is valid for the next turn.
    let (_, turn) = run_turn(&server, &conv, json!({"content": "next"})).await;
    assert_eq!(turn["status"], "completed");
}

#[tokio::test]
async fn a_long_advice_stays_within_the_buffer_cap_and_the_result_has_all_of_it() {
    let cap = 2048;
    // A context window the 1,500-word question and its long advice fit
    // (in the mock's default 4,096 tokens the second step would not).
    let server = TestServer::builder()
        .listed(LISTED)
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\
             models = [{ id = \"tool-call:advisor\", context_window = 1000000 }]\n",
        )
        .extra(&format!(
            "[defaults]\nmodel = \"mock/mock-model\"\n[turns]\ntool_output_buffer_bytes = {cap}\n"
        ))
        .start()
        .await;
    let conv = advised(&server, "mock/slow:5").await;
    let words: Vec<String> = (0..1500).map(|i| format!("word{i}")).collect();
    let mut watcher = Sse::open(&server, &conv, None).await;
    watcher.replay().await;
    let started = start_turn(
        &server,
        &conv,
        json!({"content": words.join(" "), "model": "mock/tool-call:advisor"}),
    )
    .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    // Join once well over the cap has streamed.
    let mut seen = 0;
    while seen <= 4 * cap {
        let e = watcher.next_some().await;
        if e.event == "advisor.output" {
            seen += e.data["delta"].as_str().unwrap().len();
        }
    }
    let mut late = Sse::open(&server, &conv, None).await;
    let replay = late.replay().await;
    let call = replay
        .iter()
        .find(|e| e.event == "tool_call.started")
        .unwrap()
        .data["toolCallId"]
        .as_str()
        .unwrap()
        .to_owned();
    let outputs: Vec<&Ev> = replay
        .iter()
        .filter(|e| e.event == "advisor.output")
        .collect();
    let replayed: usize = outputs
        .iter()
        .map(|e| e.data["delta"].as_str().unwrap().len())
        .sum();
    assert!(replayed <= cap, "{replayed} bytes replayed, cap {cap}");
    let omitted = outputs[0].data["omittedBytes"].as_u64().expect("marker") as usize;
    assert!(omitted > 0);
    let rest = late.until(|e| ends_turn(e, &turn_id)).await;
    let tool = tool_messages(&rest)[0];
    let result: Value = serde_json::from_str(tool.data["content"].as_str().unwrap()).unwrap();
    let advice = result["advice"].as_str().unwrap();
    assert!(
        advice.ends_with("word1499"),
        "the result has the whole advice"
    );
    let joined = format!(
        "{}{}",
        advisor_output(&replay, &call),
        advisor_output(&rest, &call)
    );
    assert_eq!(omitted + joined.len(), advice.len());
    assert!(advice.ends_with(&joined));
}

#[tokio::test]
async fn client_tools_end_in_requires_action_and_tool_results_resume() {
    let server = server_with("").await;
    let conv = create(&server, json!({})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}}}}]);
    let (turn_id, events) = turn_events(
        &server,
        &conv,
        json!({"content": "Weather in Paris?", "model": "mock/tool-call:get_weather", "tools": tools}),
    )
    .await;
    let waiting = events.last().unwrap();
    assert_eq!(waiting.event, "turn.requires_action", "{events:#?}");
    let calls = waiting.data["toolCalls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["name"], "get_weather");
    let call = calls[0]["id"].as_str().unwrap().to_owned();
    let turns = get(&server, &format!("/v1/conversations/{conv}/turns")).await;
    assert_eq!(turns["data"][0]["status"], "requires_action");
    // The turn says what it waits for.
    assert_eq!(
        turns["data"][0]["pendingToolCalls"],
        json!([{"id": call, "name": "get_weather"}])
    );
    // A new turn waits for this one.
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "hello"})),
    )
    .await;
    assert_eq!(status, 409);

    let path = format!("/v1/conversations/{conv}/turns/{turn_id}/tool-results");
    for (body, want) in [
        (json!({"results": []}), "missing"),
        (
            json!({"results": [{"toolCallId": "nope", "content": "x"}]}),
            "not a pending",
        ),
        (
            json!({"results": [{"toolCallId": call, "content": "x"}, {"toolCallId": call, "content": "y"}]}),
            "twice",
        ),
    ] {
        let (status, problem) = send(&server, "POST", &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(want),
            "{problem}"
        );
    }
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/unknown/tool-results"),
        Some(json!({"results": []})),
    )
    .await;
    assert_eq!(status, 404);

    let (status, body) = send(
        &server,
        "POST",
        &path,
        Some(json!({"results": [{"toolCallId": call, "content": {"celsius": 21}}]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let turn = wait_turn(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(turn["pendingToolCalls"], json!([]), "{turn}");
    let msgs = messages(&server, &conv).await;
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert_eq!(msgs[2]["content"], r#"{"celsius":21}"#);
    assert_eq!(msgs[3]["content"], r#"tool said: {"celsius":21}"#);
    // The resumed request offered the client tools again.
    let last = server.mock.last_request().unwrap().json().unwrap();
    assert_eq!(last["tools"], tools);
    // Answering again is a conflict.
    let (status, _) = send(
        &server,
        "POST",
        &path,
        Some(json!({"results": [{"toolCallId": call, "content": "x"}]})),
    )
    .await;
    assert_eq!(status, 409);
    // Two sessions: the first run (the turn id) and the resumed one under it.
    let sessions = sessions(&server, &conv, 2).await;
    assert!(sessions.iter().any(|s| s["id"] == turn_id.as_str()));
    assert!(sessions
        .iter()
        .any(|s| s["parentSessionId"] == turn_id.as_str()));

    // A waiting turn can be cancelled.
    let (turn_id, events) = turn_events(
        &server,
        &conv,
        json!({"content": "Again?", "model": "mock/tool-call:get_weather", "tools": tools}),
    )
    .await;
    assert_eq!(events.last().unwrap().event, "turn.requires_action");
    let (status, _) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let turns = get(&server, &format!("/v1/conversations/{conv}/turns")).await;
    assert_eq!(turns["data"][1]["status"], "cancelled", "{turns}");
    let (_, turn) = run_turn(&server, &conv, json!({"content": "plain"})).await;
    assert_eq!(turn["status"], "completed");
    log(&server, &conv).await;
}

#[tokio::test]
async fn invalid_client_tools_are_422_before_anything_is_written() {
    let server = server_with("[turns]\nadvisor_max_uses = 2\n").await;
    // Given a conversation advised by `mock/echo`.
    let conv = advised(&server, "mock/echo").await;
    // Invalid client tools are refused before anything is written.
    for tools in [
        json!([{"type": "code_interpreter"}]),
        json!([{"type": "function", "function": {"name": "bad name"}}]),
        json!([{"type": "function", "function": {"name": "advisor"}}]),
        json!([{"type": "function", "function": {"name": "a"}},
               {"type": "function", "function": {"name": "a"}}]),
    ] {
        let (status, problem) = send(
            &server,
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": "x", "tools": tools})),
        )
        .await;
        assert_eq!(status, 422, "{tools}: {problem}");
    }
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"],
        1
    );
}

#[tokio::test]
async fn an_advisor_call_past_its_uses_per_turn_is_a_tool_error() {
    let server = server_with("[turns]\nadvisor_max_uses = 2\n").await;
    // Given a conversation advised by `mock/echo`.
    let conv = advised(&server, "mock/echo").await;

    // Three calls with two uses allowed: the third is a clear tool error.
    let (_, events) = turn_events(
        &server,
        &conv,
        json!({"content": "q", "model": "mock/tool-call:advisor*3"}),
    )
    .await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    let results: Vec<Value> = tool_messages(&events)
        .iter()
        .map(|e| serde_json::from_str(e.data["content"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["remainingUses"], 1);
    assert_eq!(results[1]["remainingUses"], 0);
    assert_eq!(results[2]["type"], "error");
    assert!(
        results[2]["error"]
            .as_str()
            .unwrap()
            .contains("at most 2 times per turn"),
        "{}",
        results[2]
    );
    assert_eq!(tool_messages(&events)[2].data["isError"], true);
}

#[tokio::test]
async fn a_failing_advisor_is_an_error_result_and_the_turn_goes_on() {
    let server = server_with("[turns]\nadvisor_max_uses = 2\n").await;
    // A failing advisor: an error result the model sees, the turn goes on,
    // the error is in the advisor's session.
    let failing = advised(&server, "mock/status:500").await;
    let (_, events) = turn_events(
        &server,
        &failing,
        json!({"content": "q", "model": "mock/tool-call:advisor"}),
    )
    .await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    let tool = tool_messages(&events)[0];
    assert_eq!(tool.data["isError"], true);
    let result: Value = serde_json::from_str(tool.data["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["type"], "error");
    assert!(
        result["error"].as_str().unwrap().contains("HTTP 500"),
        "{result}"
    );
    let sessions = sessions(&server, &failing, 2).await;
    let advisor = sessions
        .iter()
        .find(|s| s["operation"] == "advisor")
        .unwrap();
    assert_eq!(advisor["status"], "error");
    assert!(advisor["lastError"].as_str().unwrap().contains("HTTP 500"));
}

#[tokio::test]
async fn a_tool_nobody_offered_is_an_error_result_naming_it() {
    let server = server_with("[turns]\nadvisor_max_uses = 2\n").await;
    // A tool nobody offered: an error result naming the tools.
    let plain = create(&server, json!({})).await;
    let (_, events) = turn_events(
        &server,
        &plain,
        json!({"content": "q", "model": "mock/tool-call:nonexistent"}),
    )
    .await;
    assert_eq!(events.last().unwrap().event, "turn.completed");
    let tool = tool_messages(&events)[0];
    assert!(tool.data["content"]
        .as_str()
        .unwrap()
        .contains("unknown tool \\\"nonexistent\\\""));
}

#[tokio::test]
async fn the_advisor_result_carries_the_reasoning_level_it_ran_with() {
    let server = server_with("").await;
    // Given an advisor config that asks for high reasoning effort.
    let (status, config) = send(
        &server,
        "POST",
        "/v1/llms",
        Some(json!({"displayName": "thinker", "model": "mock/echo",
                    "providerOptions": {"reasoningEffort": "high"}})),
    )
    .await;
    assert_eq!(status, 201, "{config}");
    let conv = create(
        &server,
        json!({"advisor": true, "llmOverrides": {"advisor": config["id"]}}),
    )
    .await;
    // When the chat model consults it.
    let (_, events) = turn_events(
        &server,
        &conv,
        json!({"content": "Which sort?", "model": "mock/tool-call:advisor"}),
    )
    .await;
    // Then the tool result names the effort, beside the advice, the model
    // and the remaining uses; the advisor call was sent with it.
    let tool = tool_messages(&events)[0];
    let result: Value = serde_json::from_str(tool.data["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["type"], "advice", "{result}");
    assert_eq!(result["reasoningLevel"], "high", "{result}");
    assert_eq!(result["advisorModel"], "mock/echo");
    assert_eq!(result["remainingUses"], 2);
    assert!(result["advice"].as_str().unwrap().starts_with("echo: "));
    let advisor_request = server
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .find(|r| r["model"] == "echo")
        .expect("the advisor call");
    assert_eq!(advisor_request["reasoning_effort"], "high");
}

#[tokio::test]
async fn the_advisor_setting_is_visible_and_can_be_switched_off() {
    let server = server_with("[turns]\nadvisor_max_uses = 2\n").await;
    // Given a conversation advised by `mock/echo`.
    let conv = advised(&server, "mock/echo").await;

    // The setting is visible and can be switched off.
    let settings = get(&server, &format!("/v1/conversations/{conv}/settings")).await;
    assert_eq!(settings["advisor"], true);
    assert_eq!(settings["advisorModel"], "mock/echo");
    let (status, s) = send(
        &server,
        "PATCH",
        &format!("/v1/conversations/{conv}/settings"),
        Some(json!({"advisor": false})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["advisor"], false);
    let (status, _) = send(
        &server,
        "PATCH",
        &format!("/v1/conversations/{conv}/settings"),
        Some(json!({"advisor": "yes"})),
    )
    .await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn imported_messages_join_the_history_the_model_receives() {
    let server = server_with("").await;
    let conv = create(&server, json!({})).await;
    let path = format!("/v1/conversations/{conv}/messages");
    for (body, field) in [
        (json!({"messages": []}), None),
        (
            json!({"messages": [{"role": "system", "content": "x"}]}),
            Some("messages[0].role"),
        ),
        (
            json!({"messages": [{"role": "user", "content": ""}]}),
            Some("messages[0].content"),
        ),
        (
            json!({"messages": [{"role": "user", "content": "q"},
                                {"role": "tool", "tool_call_id": "nope", "content": "r"}]}),
            Some("messages[1].tool_call_id"),
        ),
        (
            json!({"messages": [{"role": "assistant", "content": null}]}),
            Some("messages[0].content"),
        ),
    ] {
        let (status, problem) = send(&server, "POST", &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body}: {problem}");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{problem}");
        }
    }
    let (status, _) = send(&server, "POST", &path, Some(json!({"nope": []}))).await;
    assert_eq!(status, 400);
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}")).await["lastSeq"],
        1,
        "nothing written"
    );

    let call = json!({"id": "call_1", "type": "function",
                      "function": {"name": "lookup", "arguments": "{\"q\": 1}"}});
    let (status, body) = send(
        &server,
        "POST",
        &path,
        Some(json!({"messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": "It is 42."}
        ]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["imported"], 4);
    let msgs = messages(&server, &conv).await;
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
    assert!(msgs.iter().all(|m| m["modelId"].is_null()));
    // The next turn sends them in the OpenAI tool-call shape.
    run_turn(
        &server,
        &conv,
        json!({"content": "second", "model": "mock/echo"}),
    )
    .await;
    let sent = server.mock.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
            {"role": "user", "content": "second"}
        ])
    );
    let c = get(&server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["latestModelId"], "mock/echo");
    log(&server, &conv).await;
}

#[tokio::test]
async fn a_tool_step_sends_the_first_steps_messages_plus_its_call_and_result() {
    let server = server_with("").await;
    let conv = create(&server, json!({})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "first", "model": "mock/echo"}),
    )
    .await;
    run_turn(
        &server,
        &conv,
        json!({"content": "q", "model": "mock/tool-call:nonexistent"}),
    )
    .await;
    let steps: Vec<Value> = server
        .mock
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .filter(|r| r["model"] == "tool-call:nonexistent")
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    let (first, second) = (&steps[0], &steps[1]);
    // Everything but the messages is the same request.
    let without_messages = |r: &Value| {
        let mut r = r.clone();
        r.as_object_mut().unwrap().remove("messages");
        r
    };
    assert_eq!(without_messages(first), without_messages(second));
    // Step 2 = step 1's messages, then the stored call and its result.
    let first_msgs = first["messages"].as_array().unwrap();
    let second_msgs = second["messages"].as_array().unwrap();
    assert_eq!(
        first_msgs.last().unwrap(),
        &json!({"role": "user", "content": "q"})
    );
    assert_eq!(second_msgs.len(), first_msgs.len() + 2, "{second}");
    assert_eq!(&second_msgs[..first_msgs.len()], first_msgs.as_slice());
    let stored = messages(&server, &conv).await;
    let tool = stored.iter().find(|m| m["role"] == "tool").unwrap();
    let call_id = second_msgs[first_msgs.len()]["tool_calls"][0]["id"].clone();
    assert_eq!(second_msgs[first_msgs.len()]["role"], "assistant");
    assert_eq!(
        second_msgs[first_msgs.len()]["tool_calls"][0]["function"]["name"],
        "nonexistent"
    );
    assert_eq!(
        second_msgs[first_msgs.len() + 1],
        json!({"role": "tool", "tool_call_id": call_id, "content": tool["content"]})
    );
}
