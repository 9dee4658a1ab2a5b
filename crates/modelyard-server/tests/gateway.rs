//! End-to-end tests of the OpenAI-compatible gateway and the call log: the
//! real server in front of the in-process mock upstream, driven over HTTP.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{chat_body, error_envelope, sse_data, TestServer};
use modelyard_testkit::{MockUpstream, UPSTREAM_MODEL};
use serde_json::{json, Value};

const CLIENT_GONE: &str = "client disconnected before the response completed";

fn upstream_model_field() -> String {
    format!("\"model\":\"{UPSTREAM_MODEL}\"")
}

/// The chat requests the mock received, in order.
fn chat_requests(mock: &MockUpstream) -> Vec<modelyard_testkit::RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/chat/completions")
        .collect()
}

/// The one call in `calls` whose `modelId` is `model_id`.
fn call_for<'a>(calls: &'a [Value], model_id: &str) -> &'a Value {
    let found: Vec<&Value> = calls.iter().filter(|c| c["modelId"] == model_id).collect();
    assert_eq!(found.len(), 1, "one call for {model_id}: {calls:#?}");
    found[0]
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

fn content_type(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

// -------------------------------------------------------------------------
// 1. Non-streaming pass-through

#[tokio::test]
async fn non_streaming_request_and_response_pass_through_byte_for_byte_except_model() {
    let server = TestServer::start().await;
    let client_body = "{ \"model\" :  \"mock/echo\",\n\t\"messages\":[ {\"role\":\"user\",\"content\":\"hello   wide world\"} ] ,\n  \"x_custom\":{\"keep\":[1,2.50,\"é\"]} , \"temperature\": 0.70 ,\"n\":1 }";

    let response = server.chat_raw(client_body).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    let got = response.bytes().await.unwrap();

    // What the upstream received: the client's bytes with only the model value changed.
    let requests = chat_requests(&server.mock);
    assert_eq!(requests.len(), 1, "one upstream request");
    let expected_upstream = client_body.replace("\"mock/echo\"", "\"echo\"");
    assert_ne!(expected_upstream, client_body);
    assert_eq!(
        String::from_utf8_lossy(&requests[0].body),
        expected_upstream,
        "upstream body is the client body with only the model rewritten"
    );

    // What the upstream answers to that body, fetched directly.
    let (status, mock_raw) = server.mock_chat_raw(requests[0].body.clone()).await;
    assert_eq!(status, 200);
    let mock_text = std::str::from_utf8(&mock_raw).unwrap();
    assert!(mock_text.contains(&upstream_model_field()), "{mock_text}");
    assert!(mock_text.contains("\"x_mock_extra\""), "{mock_text}");
    assert!(mock_text.contains("\"system_fingerprint\""), "{mock_text}");
    let expected = mock_text.replace(&upstream_model_field(), "\"model\":\"mock/echo\"");
    assert_eq!(
        std::str::from_utf8(&got).unwrap(),
        expected,
        "client gets the upstream body with only the model rewritten"
    );

    // The record keeps what was sent and the usage the upstream reported.
    let call = server.only_call().await;
    let answer: Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(call["status"], "ok");
    assert_eq!(call["httpStatus"], 200);
    assert_eq!(call["stream"], false);
    assert_eq!(call["modelId"], "mock/echo");
    assert_eq!(call["upstreamModel"], "echo");
    assert_eq!(
        call["request"],
        serde_json::from_str::<Value>(&expected_upstream).unwrap()
    );
    assert_eq!(call["responseText"], "echo: hello   wide world");
    assert_eq!(call["finishReason"], "stop");
    assert_eq!(
        call["usage"]["promptTokens"],
        answer["usage"]["prompt_tokens"]
    );
    assert_eq!(
        call["usage"]["completionTokens"],
        answer["usage"]["completion_tokens"]
    );
    assert_eq!(
        call["usage"]["totalTokens"],
        answer["usage"]["total_tokens"]
    );
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 2. Streaming pass-through

#[tokio::test]
async fn streaming_events_pass_through_with_only_model_rewritten() {
    let server = TestServer::start().await;
    let client_body = r#"{"model":"mock/echo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"one two three"}],"x_custom":{"keep":[1,2.50,"é"]}}"#;

    let response = server.chat_raw(client_body).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/event-stream"));
    let got = sse_data(&response.text().await.unwrap());

    let requests = chat_requests(&server.mock);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&requests[0].body),
        client_body.replace("\"mock/echo\"", "\"echo\""),
        "the client already asked for usage: only the model changes"
    );

    let (status, mock_raw) = server.mock_chat_raw(requests[0].body.clone()).await;
    assert_eq!(status, 200);
    let expected: Vec<String> = sse_data(std::str::from_utf8(&mock_raw).unwrap())
        .into_iter()
        .map(|e| e.replace(&upstream_model_field(), "\"model\":\"mock/echo\""))
        .collect();
    assert!(expected.len() >= 5, "role, words, finish, usage, DONE");
    assert_eq!(got, expected);
    assert_eq!(got.last().map(String::as_str), Some("[DONE]"));
    for event in &got[..got.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        assert_eq!(chunk["model"], "mock/echo");
        assert_eq!(chunk["x_mock_extra"], json!({"kept": true}));
    }
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 3. Usage capture

#[tokio::test]
async fn streaming_usage_is_recorded_without_showing_the_client_a_chunk_it_did_not_ask_for() {
    let server = TestServer::start().await;
    let client_body = r#"{"model":"mock/echo","stream":true,"messages":[{"role":"user","content":"count these four words"}]}"#;

    let response = server.chat_raw(client_body).await;
    assert_eq!(response.status(), 200);
    let got = sse_data(&response.text().await.unwrap());

    let requests = chat_requests(&server.mock);
    assert_eq!(requests.len(), 1);
    let sent = requests[0].json().expect("upstream body is JSON");
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asks the upstream for usage: {sent}"
    );

    // The upstream's own stream for that request, including its usage chunk.
    let (_, mock_raw) = server.mock_chat_raw(requests[0].body.clone()).await;
    let upstream_events = sse_data(std::str::from_utf8(&mock_raw).unwrap());
    let usage_event: Value = upstream_events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .find(|c| c["choices"] == json!([]))
        .expect("the upstream sent a usage chunk");
    let usage = &usage_event["usage"];

    // The client sees everything but that chunk.
    let expected: Vec<String> = upstream_events
        .iter()
        .filter(|e| !e.contains("\"choices\":[]"))
        .map(|e| e.replace(&upstream_model_field(), "\"model\":\"mock/echo\""))
        .collect();
    assert_eq!(got, expected);
    for event in &got {
        if let Ok(chunk) = serde_json::from_str::<Value>(event) {
            assert_ne!(chunk["choices"], json!([]), "no usage-only chunk: {event}");
            assert!(chunk.get("usage").is_none(), "no usage: {event}");
        }
    }

    let call = server.only_call().await;
    assert_eq!(call["status"], "ok");
    assert_eq!(call["responseText"], "echo: count these four words");
    assert_eq!(call["usage"]["promptTokens"], usage["prompt_tokens"]);
    assert_eq!(
        call["usage"]["completionTokens"],
        usage["completion_tokens"]
    );
    assert_eq!(call["usage"]["totalTokens"], usage["total_tokens"]);
    assert_eq!(call["usage"]["promptTokens"], 4);
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_usage_reaches_the_client_that_asked_for_it_and_is_recorded() {
    let server = TestServer::start().await;
    let mut body = chat_body("mock/echo", true);
    body["stream_options"] = json!({"include_usage": true});

    let response = server.chat(&body).await;
    assert_eq!(response.status(), 200);
    let got = sse_data(&response.text().await.unwrap());
    assert_eq!(got.last().map(String::as_str), Some("[DONE]"));
    let usage_chunks: Vec<Value> = got
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|c| c["choices"] == json!([]))
        .collect();
    assert_eq!(usage_chunks.len(), 1, "one usage chunk: {got:#?}");
    let usage_chunk = &usage_chunks[0];
    assert_eq!(usage_chunk["model"], "mock/echo");
    assert!(usage_chunk["usage"]["total_tokens"].as_u64().unwrap() > 0);

    let call = server.only_call().await;
    assert_eq!(
        call["usage"]["promptTokens"],
        usage_chunk["usage"]["prompt_tokens"]
    );
    assert_eq!(
        call["usage"]["completionTokens"],
        usage_chunk["usage"]["completion_tokens"]
    );
    assert_eq!(
        call["usage"]["totalTokens"],
        usage_chunk["usage"]["total_tokens"]
    );
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 4. Request errors

#[tokio::test]
async fn unknown_models_are_404_with_the_available_ids() {
    let server = TestServer::start().await;

    // A registered provider that does not serve the model.
    let (status, body) = json_of(server.chat(&chat_body("mock/no-such-model", false)).await).await;
    assert_eq!(status, 404, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["param"], "model");
    assert_eq!(error["code"], "model_not_found");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("no-such-model"), "{message}");
    assert!(
        message.contains("mock/echo"),
        "lists what exists: {message}"
    );

    // A bare id nobody serves.
    let (status, body) = json_of(server.chat(&chat_body("no-such-model", false)).await).await;
    assert_eq!(status, 404, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["param"], "model");
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("mock/echo"));

    // An unknown provider prefix: the whole string is a bare id nobody serves.
    let (status, body) = json_of(server.chat(&chat_body("nobody/echo", false)).await).await;
    assert_eq!(status, 404, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["code"], "model_not_found");
    assert!(error["message"].as_str().unwrap().contains("nobody/echo"));

    assert!(
        chat_requests(&server.mock).is_empty(),
        "nothing sent upstream"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_are_400_envelopes() {
    let server = TestServer::start().await;

    let (status, body) = json_of(server.chat_raw("{\"model\": \"mock/echo\", ").await).await;
    assert_eq!(status, 400, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["type"], "invalid_request_error");

    let (status, body) = json_of(server.chat(&json!({"model": "mock/echo"})).await).await;
    assert_eq!(status, 400, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "messages");
    assert!(error["message"].as_str().unwrap().contains("messages"));

    assert!(
        chat_requests(&server.mock).is_empty(),
        "nothing sent upstream"
    );
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 5–7. Upstream failures before the answer

/// `[routing]` without retries.
const NO_RETRIES: &str = "[routing]\nretries = 0\n";

#[tokio::test]
async fn unreachable_upstream_is_502_and_recorded() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let server = TestServer::builder()
        .providers(&format!(
            "[[providers]]\nname = \"dead\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:{port}\"\n"
        ))
        // One attempt: the mapping of a failure, not routing's retries
        // (tests/routing.rs), is under test.
        .extra(NO_RETRIES)
        .start()
        .await;

    let (status, body) = json_of(server.chat(&chat_body("dead/echo", false)).await).await;
    assert_eq!(status, 502, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["type"], "upstream_unreachable");
    assert!(error["message"].as_str().unwrap().contains("dead"));

    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(call["provider"], "dead");
    assert_eq!(call["httpStatus"], Value::Null);
    let recorded = call["error"].as_str().unwrap();
    assert!(recorded.contains("provider 'dead'"), "{recorded}");
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_first_token_timeout_is_504() {
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\ntimeouts = { first_token_ms = 300 }\n",
        )
        .listed(&["slow-first:3000"])
        // One attempt: the mapping of a failure, not routing's retries
        // (tests/routing.rs), is under test.
        .extra(NO_RETRIES)
        .start()
        .await;

    let started = Instant::now();
    let (status, body) = json_of(server.chat(&chat_body("mock/slow-first:3000", true)).await).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_millis(2_500));
    let error = error_envelope(&body);
    assert_eq!(error["type"], "upstream_timeout");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("first token"), "{message}");

    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(call["error"], message);
    assert_eq!(call["httpStatus"], Value::Null);
    // The gateway gave up on the upstream request too.
    assert!(
        server
            .mock
            .wait_cancelled_requests(1, Duration::from_secs(5))
            .await
    );
    server.shutdown().await;
}

#[tokio::test]
async fn non_streaming_total_timeout_is_504() {
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\ntimeouts = { total_ms = 300 }\n",
        )
        .listed(&["slow-first:3000"])
        // One attempt: the mapping of a failure, not routing's retries
        // (tests/routing.rs), is under test.
        .extra(NO_RETRIES)
        .start()
        .await;

    let started = Instant::now();
    let (status, body) =
        json_of(server.chat(&chat_body("mock/slow-first:3000", false)).await).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_millis(2_500));
    let error = error_envelope(&body);
    assert_eq!(error["type"], "upstream_timeout");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("timed out"), "{message}");

    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(call["stream"], false);
    assert_eq!(call["error"], message);
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_and_are_recorded() {
    // One attempt: the pass-through of a failure, not routing's retries
    // (tests/routing.rs), is under test.
    let server = TestServer::builder().extra(NO_RETRIES).start().await;

    for (model, stream, code) in [
        ("mock/status:429", false, 429),
        ("mock/status:500", false, 500),
        ("mock/status:429", true, 429),
    ] {
        let response = server.chat(&chat_body(model, stream)).await;
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, body) = json_of(response).await;
        assert_eq!(status, code, "{model} stream={stream}: {body}");
        // The upstream's Retry-After reaches the client (the mock sends it with 429 only).
        assert_eq!(
            retry_after.as_deref(),
            (code == 429).then_some("1"),
            "{model}"
        );
        let error = error_envelope(&body);
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("mock upstream status {code}")),
            "{message}"
        );
        assert_eq!(error["type"], "mock_error", "upstream type kept: {body}");
        assert_eq!(error["code"], code, "upstream code kept: {body}");
    }

    let calls = server.wait_calls(3).await;
    let statuses: Vec<(Value, Value, Value)> = calls
        .iter()
        .rev()
        .map(|c| {
            (
                c["httpStatus"].clone(),
                c["status"].clone(),
                c["stream"].clone(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (json!(429), json!("error"), json!(false)),
            (json!(500), json!("error"), json!(false)),
            (json!(429), json!("error"), json!(true)),
        ]
    );
    for call in &calls {
        assert!(call["error"]
            .as_str()
            .unwrap()
            .contains("mock upstream status"));
    }
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 8. Streaming faults

struct Fault {
    model: &'static str,
    /// Content chunks forwarded before the fault (after the role chunk).
    content_before: Option<&'static str>,
    error_type: &'static str,
    message_contains: &'static str,
}

#[tokio::test]
async fn streaming_faults_end_with_an_error_event_never_done() {
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\ntimeouts = { idle_ms = 300 }\n",
        )
        .listed(&["drop", "malformed", "inband-error", "stall:3000"])
        .start()
        .await;
    let faults = [
        Fault {
            model: "drop",
            content_before: Some("echo: "),
            error_type: "upstream_error",
            message_contains: "provider 'mock'",
        },
        Fault {
            model: "malformed",
            content_before: None,
            error_type: "upstream_invalid_response",
            message_contains: "malformed stream data",
        },
        Fault {
            model: "inband-error",
            content_before: Some("echo: "),
            error_type: "upstream_error",
            message_contains: "mock upstream failed mid-stream",
        },
        Fault {
            model: "stall:3000",
            content_before: Some("echo: "),
            error_type: "upstream_timeout",
            message_contains: "idle",
        },
    ];

    let mut messages = BTreeMap::new();
    for fault in &faults {
        let model_id = format!("mock/{}", fault.model);
        let started = Instant::now();
        let response = server.chat(&chat_body(&model_id, true)).await;
        assert_eq!(response.status(), 200, "{model_id}");
        let events = sse_data(&response.text().await.unwrap());
        assert!(
            started.elapsed() < Duration::from_millis(2_500),
            "{model_id} ends promptly"
        );
        assert!(
            !events.iter().any(|e| e == "[DONE]"),
            "{model_id}: no [DONE] after a fault: {events:#?}"
        );

        // The last event is the error.
        let (last, forwarded) = events.split_last().expect("some events");
        let last: Value = serde_json::from_str(last).unwrap();
        let error = error_envelope(&last);
        assert_eq!(error["type"], fault.error_type, "{model_id}: {last}");
        let message = error["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(fault.message_contains),
            "{model_id}: {message}"
        );

        // What came before the fault was forwarded, model rewritten.
        let chunks: Vec<Value> = forwarded
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let expected_chunks = 1 + usize::from(fault.content_before.is_some());
        assert_eq!(chunks.len(), expected_chunks, "{model_id}: {events:#?}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        for chunk in &chunks {
            assert_eq!(chunk["model"], model_id);
        }
        if let Some(text) = fault.content_before {
            assert_eq!(chunks[1]["choices"][0]["delta"]["content"], text);
        }
        messages.insert(model_id, message);
    }

    let calls = server.wait_calls(faults.len()).await;
    for fault in &faults {
        let model_id = format!("mock/{}", fault.model);
        let summary = call_for(&calls, &model_id);
        let call = server.call(summary["id"].as_str().unwrap()).await;
        assert_eq!(call["status"], "error", "{model_id}: {call:#}");
        assert_eq!(call["error"], messages[&model_id], "{model_id}");
        assert_eq!(
            call["responseText"],
            json!(fault.content_before),
            "{model_id}: partial text kept"
        );
    }
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 9. Client disconnect

#[tokio::test]
async fn client_leaving_a_stream_cancels_the_upstream() {
    let server = TestServer::builder().listed(&["slow:200"]).start().await;

    let mut response = server.chat(&chat_body("mock/slow:200", true)).await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(first.starts_with(b"data: "));
    drop(response);

    assert!(
        server.mock.wait_cancelled(1, Duration::from_secs(5)).await,
        "the upstream stream was cancelled"
    );
    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(call["error"], CLIENT_GONE);
    server.shutdown().await;
}

#[tokio::test]
async fn client_leaving_a_non_streamed_request_cancels_the_upstream() {
    let server = TestServer::builder().listed(&["hang"]).start().await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();

    let result = impatient
        .post(server.url("/v1/chat/completions"))
        .json(&chat_body("mock/hang", false))
        .send()
        .await;
    assert!(result.is_err_and(|e| e.is_timeout()));
    drop(impatient);

    assert!(
        server
            .mock
            .wait_cancelled_requests(1, Duration::from_secs(5))
            .await,
        "the upstream request was cancelled"
    );
    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(call["error"], CLIENT_GONE);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 10–11. Models and resolution

#[tokio::test]
async fn models_lists_composite_ids_with_context_windows() {
    let server = TestServer::builder()
        .providers(
            r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"

[[providers]]
name = "llama"
kind = "llama-cpp"
base_url = "{mock}/v1"

[[providers.models]]
id = "tools"
context_window = 1000
"#,
        )
        .listed(&["echo", "tools"])
        .start()
        .await;

    let list = server.get_json("/v1/models").await;
    assert_eq!(list["object"], "list");
    let models: BTreeMap<String, Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap().to_owned(), m.clone()))
        .collect();
    assert_eq!(
        models.keys().map(String::as_str).collect::<Vec<_>>(),
        vec!["llama/echo", "llama/tools", "mock/echo", "mock/tools"],
    );
    for (id, model) in &models {
        let provider = id.split('/').next().unwrap();
        assert_eq!(model["object"], "model", "{model}");
        assert_eq!(model["owned_by"], provider, "{model}");
        assert_eq!(model["provider"], provider, "{model}");
        let window = if id == "llama/tools" { 1000 } else { 4096 };
        assert_eq!(model["context_window"], window, "{model}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bare_ids_route_to_the_default_provider_first() {
    // `first` (the default: no defaults.provider) lists only echo; `second`
    // (another mock, default listing) lists echo and tools.
    let other = MockUpstream::start().await;
    let server = TestServer::builder()
        .providers(&format!(
            "[[providers]]\nname = \"first\"\nkind = \"openai\"\nbase_url = \"{{mock}}\"\n\n[[providers]]\nname = \"second\"\nkind = \"openai\"\nbase_url = \"{}\"\n",
            other.base_url()
        ))
        .listed(&["echo"])
        .start()
        .await;

    let (status, body) = json_of(server.chat(&chat_body("echo", false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "first/echo");
    let (status, body) = json_of(server.chat(&chat_body("tools", false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "second/tools");

    let calls = server.wait_calls(2).await;
    assert_eq!(call_for(&calls, "first/echo")["provider"], "first");
    assert_eq!(call_for(&calls, "second/tools")["provider"], "second");
    assert_eq!(call_for(&calls, "first/echo")["upstreamModel"], "echo");
    assert_eq!(chat_requests(&server.mock).len(), 1);
    assert_eq!(chat_requests(&other).len(), 1);
    assert_eq!(
        chat_requests(&server.mock)[0].json().unwrap()["model"],
        "echo"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bare_ids_follow_the_configured_default_provider() {
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"first\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\n[[providers]]\nname = \"second\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n",
        )
        .extra("[defaults]\nprovider = \"second\"\n")
        .start()
        .await;

    let (status, body) = json_of(server.chat(&chat_body("echo", false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "second/echo");
    let call = server.only_call().await;
    assert_eq!(call["provider"], "second");
    assert_eq!(call["modelId"], "second/echo");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 12. Tool calls

#[tokio::test]
async fn tool_calls_are_recorded_for_streamed_and_plain_answers() {
    let server = TestServer::start().await;
    let expected = json!([{
        "id": "call_mock_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
    }]);

    let (status, body) = json_of(server.chat(&chat_body("mock/tools", false)).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["tool_calls"], expected);
    let response = server.chat(&chat_body("mock/tools", true)).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));

    let calls = server.wait_calls(2).await;
    for call in &calls {
        let full = server.call(call["id"].as_str().unwrap()).await;
        assert_eq!(full["status"], "ok", "{full:#}");
        assert_eq!(full["toolCalls"], expected, "stream={}", full["stream"]);
        assert_eq!(full["finishReason"], "tool_calls");
    }
    let streams: BTreeSet<bool> = calls
        .iter()
        .map(|c| c["stream"].as_bool().unwrap())
        .collect();
    assert_eq!(streams, BTreeSet::from([false, true]));
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 13–14. Call log API

#[tokio::test]
async fn call_log_api_errors_are_problem_documents() {
    let server = TestServer::start().await;
    for (path, status) in [("/v1/calls?limit=0", 400), ("/v1/calls/nope", 404)] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(
            content_type(&response),
            "application/problem+json",
            "{path}"
        );
        let body: Value = response.json().await.unwrap();
        assert!(body["type"].is_string(), "{path}: {body}");
        assert!(body["title"].is_string(), "{path}: {body}");
        assert_eq!(body["status"], status, "{path}: {body}");
        assert!(body["detail"].is_string(), "{path}: {body}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn call_log_pages_backwards_without_duplicates() {
    let server = TestServer::start().await;
    for _ in 0..5 {
        let response = server.chat(&chat_body("mock/echo", false)).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let all: Vec<String> = server
        .wait_calls(5)
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 5);

    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let path = match &before {
            Some(id) => format!("/v1/calls?limit=2&before={id}"),
            None => "/v1/calls?limit=2".to_owned(),
        };
        let page = server.get_json(&path).await;
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        if let Some(cursor) = &before {
            assert!(ids.iter().all(|id| id < cursor), "older than the cursor");
        }
        pages.push(ids.len());
        seen.extend(ids);
        match page["nextBefore"].as_str() {
            Some(next) => {
                assert_eq!(Some(next), seen.last().map(String::as_str));
                before = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages.len() < 10, "paging terminates");
    }
    assert_eq!(pages, vec![2, 2, 1]);
    assert_eq!(seen, all, "every call once, newest first");
    server.shutdown().await;
}

#[tokio::test]
async fn disabled_call_log_records_nothing() {
    let server = TestServer::builder().call_log(false).start().await;
    let (status, body) = json_of(server.chat(&chat_body("mock/echo", false)).await).await;
    assert_eq!(status, 200, "{body}");
    let response = server.chat(&chat_body("mock/echo", true)).await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    assert!(server.calls().await.is_empty());
    // Shutdown drains any queued record, so reopening the same database shows
    // whether anything was written.
    let dir = server.shutdown().await;

    let reopened = TestServer::builder().dir(dir).start().await;
    assert!(reopened.calls().await.is_empty(), "no calls were recorded");
    // Control: the same database does record when the log is on.
    let response = reopened.chat(&chat_body("mock/echo", false)).await;
    assert_eq!(response.status(), 200);
    reopened.wait_calls(1).await;
    reopened.shutdown().await;
}

// -------------------------------------------------------------------------
// Non-streamed faults, defaults, limits, credentials

#[tokio::test]
async fn non_streaming_faults_are_errors_not_silent_successes() {
    let server = TestServer::start().await;
    let cases = [
        (
            "mock/inband-error",
            "upstream_error",
            "mock upstream failed mid-stream",
        ),
        ("mock/drop", "upstream_error", "provider 'mock'"),
        (
            "mock/malformed",
            "upstream_invalid_response",
            "not a JSON object",
        ),
    ];
    let mut messages = BTreeMap::new();
    for (model, kind, contains) in cases {
        let (status, body) = json_of(server.chat(&chat_body(model, false)).await).await;
        assert_eq!(status, 502, "{model}: {body}");
        let error = error_envelope(&body);
        assert_eq!(error["type"], kind, "{model}: {body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(contains), "{model}: {message}");
        messages.insert(model, message.to_owned());
    }
    let calls = server.wait_calls(cases.len()).await;
    for (model, _, _) in cases {
        let call = call_for(&calls, model);
        assert_eq!(call["status"], "error", "{model}: {call:#}");
        assert_eq!(call["error"], messages[model], "{model}");
        assert_eq!(call["httpStatus"], 200, "{model}: the upstream's status");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn requests_without_a_model_use_the_default_model() {
    let server = TestServer::builder()
        .extra("[defaults]\nmodel = \"mock/echo\"\n")
        .start()
        .await;
    let (status, body) = json_of(
        server
            .chat(&json!({"messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "mock/echo");
    let sent = chat_requests(&server.mock)[0].json().unwrap();
    assert_eq!(sent["model"], "echo");
    assert_eq!(server.only_call().await["modelId"], "mock/echo");
    server.shutdown().await;

    let server = TestServer::start().await;
    let (status, body) = json_of(
        server
            .chat(&json!({"messages": [{"role": "user", "content": "hi"}]}))
            .await,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(error_envelope(&body)["param"], "model");
    server.shutdown().await;
}

/// `"model": null` / `"stream_options": null` make `ChatRequestHead::upstream_body`
/// (modelyard-upstream) insert a second `model` / `stream_options` key at the
/// front of the object while the client's `null` stays; JSON readers keep the
/// last duplicate, so the upstream sees `model: null` and no `include_usage`.
#[tokio::test]
async fn null_model_and_stream_options_are_replaced_not_duplicated() {
    let server = TestServer::builder()
        .extra("[defaults]\nmodel = \"mock/echo\"\n")
        .start()
        .await;
    let response = server
        .chat_raw(
            r#"{"model":null,"stream":true,"stream_options":null,"messages":[{"role":"user","content":"hi there"}]}"#,
        )
        .await;
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    let sent = chat_requests(&server.mock)[0].json().unwrap();
    assert_eq!(sent["model"], "echo", "{sent}");
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    let call = server.only_call().await;
    assert_eq!(call["usage"]["promptTokens"], 2, "{call:#}");
    server.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_are_413_envelopes() {
    let server = TestServer::builder()
        .server("max_body_bytes = 1024")
        .start()
        .await;
    let mut body = chat_body("mock/echo", false);
    body["messages"][0]["content"] = json!("x".repeat(2048));
    let (status, body) = json_of(server.chat(&body).await).await;
    assert_eq!(status, 413, "{body}");
    error_envelope(&body);
    assert!(chat_requests(&server.mock).is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn reasoning_is_recorded_apart_from_the_answer() {
    let server = TestServer::start().await;
    for stream in [false, true] {
        let response = server.chat(&chat_body("mock/reasoning", stream)).await;
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    let calls = server.wait_calls(2).await;
    for call in &calls {
        let full = server.call(call["id"].as_str().unwrap()).await;
        let stream = full["stream"].as_bool().unwrap();
        assert_eq!(full["reasoningText"], "thinking...", "stream={stream}");
        assert_eq!(
            full["responseText"], "echo: hello brave new world",
            "stream={stream}"
        );
        assert_eq!(full["usage"]["reasoningTokens"], 2, "stream={stream}");
        if stream {
            assert!(full["timeToFirstTokenMs"].is_i64(), "{full:#}");
        } else {
            assert_eq!(full["timeToFirstTokenMs"], Value::Null);
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn api_keys_come_from_the_environment_and_a_missing_key_disables_the_provider() {
    let server = TestServer::builder()
        .providers(
            r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"
api_key_env = "MOCK_KEY"

[[providers]]
name = "locked"
kind = "openai"
base_url = "{mock}"
api_key_env = "UNSET_KEY"
"#,
        )
        .env(&[("MOCK_KEY", "sk-test-123")])
        .start()
        .await;

    let response = server.chat(&chat_body("mock/echo", false)).await;
    assert_eq!(response.status(), 200);
    let requests = chat_requests(&server.mock);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].header("authorization"),
        Some("Bearer sk-test-123")
    );

    let (status, body) = json_of(server.chat(&chat_body("locked/echo", false)).await).await;
    assert_eq!(status, 503, "{body}");
    let message = error_envelope(&body)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("UNSET_KEY"), "{message}");
    assert_eq!(chat_requests(&server.mock).len(), 1, "nothing sent");

    let models = server.get_json("/v1/models").await;
    assert!(models["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["provider"] == "mock"));
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Hostile upstreams (issue 12)

#[tokio::test]
async fn upstream_credential_errors_are_502_upstream_auth_error_not_the_clients() {
    let server = TestServer::builder()
        .listed(&["echo", "status:401", "status:403"])
        .start()
        .await;
    for (model, stream, code) in [
        ("mock/status:401", false, 401),
        ("mock/status:403", false, 403),
        ("mock/status:401", true, 401),
    ] {
        let (status, body) = json_of(server.chat(&chat_body(model, stream)).await).await;
        // Not 401/403: SDKs would tell the user that *their* key is bad.
        assert_eq!(status, 502, "{model} stream={stream}: {body}");
        let error = error_envelope(&body);
        assert_eq!(error["code"], "upstream_auth_error", "{body}");
        assert_eq!(error["type"], "upstream_error", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains("provider 'mock'"), "{message}");
        assert!(message.contains(&format!("HTTP {code}")), "{message}");
    }
    // The record keeps the upstream's status.
    let calls = server.wait_calls(3).await;
    let statuses: Vec<Value> = calls
        .iter()
        .rev()
        .map(|c| c["httpStatus"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(401), json!(403), json!(401)]);
    assert!(calls.iter().all(|c| c["status"] == "error"));
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_redirects_are_502_and_never_followed() {
    let server = TestServer::builder()
        .listed(&["echo", "status:302"])
        .start()
        .await;
    let (status, body) = json_of(server.chat(&chat_body("mock/status:302", false)).await).await;
    assert_eq!(status, 502, "{body}");
    let message = error_envelope(&body)["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("HTTP 302"), "{message}");
    assert!(message.contains("not followed"), "{message}");
    assert_eq!(server.only_call().await["httpStatus"], 302);
    server.shutdown().await;
}

#[tokio::test]
async fn an_upstream_event_over_max_sse_event_bytes_ends_the_stream_with_an_error() {
    let server = TestServer::builder()
        .extra("[limits]\nmax_sse_event_bytes = 1024\n")
        .start()
        .await;
    // The mock streams one event per word: one word of 3000 bytes.
    let mut body = chat_body("mock/echo", true);
    body["messages"][0]["content"] = json!("x".repeat(3000));
    let response = server.chat(&body).await;
    assert_eq!(response.status(), 200);
    let events = sse_data(&response.text().await.unwrap());
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "upstream_invalid_response", "{last}");
    let message = last["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("larger than 1024 bytes (limits.max_sse_event_bytes)"),
        "{message}"
    );
    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert!(call["error"]
        .as_str()
        .unwrap()
        .contains("limits.max_sse_event_bytes"));
    // A normal answer still streams under the cap.
    let response = server.chat(&chat_body("mock/echo", true)).await;
    assert!(sse_data(&response.text().await.unwrap())
        .iter()
        .any(|e| e == "[DONE]"));
    server.shutdown().await;
}
