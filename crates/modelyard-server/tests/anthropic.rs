//! End-to-end tests of the Anthropic Messages front (`POST /v1/messages`):
//! the real server in front of the in-process mock upstream (an OpenAI
//! chat-completions server whose behaviour is chosen by the model name),
//! driven over HTTP as an Anthropic SDK would: the translated upstream
//! request, the message and the named SSE events, tool use both ways,
//! errors in Anthropic's shape, `x-api-key` auth, the call log.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

/// `POST /v1/messages` with `body`, as the Anthropic SDK sends it.
async fn messages(server: &TestServer, body: &Value) -> reqwest::Response {
    server
        .http
        .post(server.url("/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("send")
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

/// Status and body: JSON when it parses, else the text as a string.
async fn json_or_text(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Asserts `body` is exactly Anthropic's error shape; returns `(type, message)`.
fn anthropic_error(body: &Value) -> (String, String) {
    let object = body.as_object().unwrap_or_else(|| panic!("object: {body}"));
    assert_eq!(object.len(), 2, "only `type` and `error`: {body}");
    assert_eq!(body["type"], "error", "{body}");
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(error.len(), 2, "only `type` and `message`: {body}");
    (
        error["type"].as_str().unwrap().to_owned(),
        error["message"].as_str().unwrap().to_owned(),
    )
}

/// The `(event, data)` pairs of a whole SSE body, asserting each event is
/// `event: <name>\ndata: <json>\n\n` with `data.type == name`.
fn events_of(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "ends with a blank line: {body:?}");
    body.split_terminator("\n\n")
        .map(|event| {
            let (head, data) = event
                .split_once('\n')
                .unwrap_or_else(|| panic!("two lines: {event:?}"));
            let name = head
                .strip_prefix("event: ")
                .unwrap_or_else(|| panic!("named: {event:?}"));
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name, "{event}");
            (name.to_owned(), data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

/// A stream's text: its `text_delta`s joined.
fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect()
}

async fn stream_events(server: &TestServer, body: &Value) -> Vec<(String, Value)> {
    let response = messages(server, body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    events_of(&response.text().await.unwrap())
}

fn hello(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hello brave new world"}],
        "stream": stream,
    })
}

#[tokio::test]
async fn a_message_is_translated_both_ways_and_recorded() {
    let server = TestServer::start().await;
    let body = json!({
        "model": "mock/echo",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "hello brave new world"}]},
        ],
        "stop_sequences": ["END"],
        "temperature": 0.3,
        "top_k": 5,
        "metadata": {"user_id": "user-7"},
    });
    let (status, message) = json_of(messages(&server, &body).await).await;
    assert_eq!(status, 200, "{message}");

    // What the upstream got: an OpenAI request with the upstream model name.
    let sent = server.mock_chats();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0],
        json!({
            "max_tokens": 50, "temperature": 0.3, "top_k": 5, "stop": ["END"], "user": "user-7",
            "model": "echo",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "hello brave new world"},
            ],
            "stream": false,
        })
    );

    // What the client got: an Anthropic message with the model it named.
    let id = message["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"), "{id}");
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "mock/echo");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "echo: hello brave new world"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    // The mock counts words: 2 + 1 + 1 + 4 prompt words (system included), 5 answer words.
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 8, "output_tokens": 5, "cache_read_input_tokens": 0})
    );

    // The call log: one `messages` call with the usage.
    let call = server.only_call().await;
    assert_eq!(call["operation"], "messages");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["modelId"], "mock/echo");
    assert_eq!(call["stream"], false);
    assert_eq!(call["responseText"], "echo: hello brave new world");
    assert_eq!(call["usage"]["promptTokens"], 8);
    assert_eq!(call["usage"]["completionTokens"], 5);
    assert_eq!(call["request"], sent[0]);
    let listed = server.calls().await;
    assert_eq!(listed[0]["operation"], "messages");
    assert_eq!(listed[0]["usage"]["totalTokens"], 13);
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_is_anthropic_named_events_in_order_and_recorded() {
    let server = TestServer::start().await;
    let events = stream_events(&server, &hello("mock/echo", true)).await;
    let names = names(&events);
    assert_eq!(
        &names[..3],
        ["message_start", "ping", "content_block_start"]
    );
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..names.len() - 3]
        .iter()
        .all(|n| *n == "content_block_delta"));
    assert_eq!(names.len(), 3 + 5 + 3, "one delta per word: {names:?}");
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["model"], "mock/echo");
    assert_eq!(start["content"], json!([]));
    assert_eq!(streamed_text(&events), "echo: hello brave new world");
    let delta = &events[events.len() - 2].1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"]["input_tokens"], 4);
    assert_eq!(delta["usage"]["output_tokens"], 5);

    // The upstream was asked to stream with usage.
    let sent = server.mock_chats();
    assert_eq!(sent[0]["stream"], true);
    assert_eq!(sent[0]["stream_options"], json!({"include_usage": true}));

    let call = server.only_call().await;
    assert_eq!(call["operation"], "messages");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["stream"], true);
    assert_eq!(call["responseText"], "echo: hello brave new world");
    assert_eq!(call["usage"]["completionTokens"], 5);
    assert!(call["firstTokenAt"].is_string(), "{call}");
    server.shutdown().await;
}

#[tokio::test]
async fn tool_use_comes_back_as_blocks_and_input_json_deltas() {
    let server = TestServer::start().await;
    let tools = json!([{"name": "get_weather", "description": "Weather",
                        "input_schema": {"type": "object",
                                         "properties": {"city": {"type": "string"}}}}]);
    let mut body = hello("mock/tools", false);
    body["tools"] = tools.clone();
    body["tool_choice"] = json!({"type": "any"});
    let (status, message) = json_of(messages(&server, &body).await).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(
        message["content"],
        json!([{"type": "tool_use", "id": "call_mock_1", "name": "get_weather",
                "input": {"city": "Paris"}}])
    );
    assert_eq!(message["stop_reason"], "tool_use");
    let sent = server.mock_chats();
    assert_eq!(
        sent[0]["tools"],
        json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
               "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    assert_eq!(sent[0]["tool_choice"], "required");

    body["stream"] = json!(true);
    let events = stream_events(&server, &body).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[2].1["content_block"],
        json!({"type": "tool_use", "id": "call_mock_1", "name": "get_weather", "input": {}})
    );
    let partial: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(events[6].1["delta"]["stop_reason"], "tool_use");

    let calls = server.wait_calls(2).await;
    assert!(calls.iter().all(|c| c["operation"] == "messages"));
    let streamed = server.call(calls[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        streamed["toolCalls"][0]["function"]["arguments"],
        "{\"city\": \"Paris\"}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_tool_round_trip_reaches_the_upstream_as_tool_calls_and_results() {
    let server = TestServer::builder()
        .listed(&["echo", "tool-call:lookup"])
        .start()
        .await;
    let tools = json!([{"name": "lookup", "input_schema": {"type": "object"}}]);
    let question = json!({"role": "user", "content": "what is six times seven"});
    // 1. The model asks for the tool.
    let (status, first) = json_of(
        messages(
            &server,
            &json!({"model": "mock/tool-call:lookup", "max_tokens": 32,
                    "tools": tools, "messages": [question]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["stop_reason"], "tool_use");
    let tool_use = first["content"][0].clone();
    assert_eq!(tool_use["type"], "tool_use");
    assert_eq!(tool_use["name"], "lookup");
    assert_eq!(
        tool_use["input"],
        json!({"question": "what is six times seven"})
    );
    let tool_use_id = tool_use["id"].as_str().unwrap().to_owned();

    // 2. The client runs it and sends the history back, streaming.
    let events = stream_events(
        &server,
        &json!({
            "model": "mock/tool-call:lookup", "max_tokens": 32, "stream": true, "tools": tools,
            "messages": [
                question,
                {"role": "assistant", "content": first["content"]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": tool_use_id,
                     "content": [{"type": "text", "text": "42"}]}]},
            ],
        }),
    )
    .await;
    assert_eq!(streamed_text(&events), "tool said: 42");
    assert_eq!(
        events[events.len() - 2].1["delta"]["stop_reason"],
        "end_turn"
    );

    let sent = server.mock_chats();
    assert_eq!(
        sent[1]["messages"],
        json!([
            {"role": "user", "content": "what is six times seven"},
            {"role": "assistant", "content": null, "tool_calls": [{
                "id": tool_use_id, "type": "function",
                "function": {"name": "lookup",
                             "arguments": "{\"question\":\"what is six times seven\"}"}}]},
            {"role": "tool", "tool_call_id": tool_use_id, "content": "42"},
        ])
    );
    server.shutdown().await;
}

#[tokio::test]
async fn request_errors_are_anthropic_errors_and_reach_no_upstream() {
    let server = TestServer::start().await;
    let cases = [
        (
            json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]}),
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            json!({"model": "mock/echo", "max_tokens": 5,
                   "messages": [{"role": "user", "content": [{"type": "video"}]}]}),
            400,
            "invalid_request_error",
            "messages.0.content.0.type",
        ),
        (
            json!({"model": "mock/no-such-model", "max_tokens": 5,
                   "messages": [{"role": "user", "content": "x"}]}),
            404,
            "not_found_error",
            "mock/echo",
        ),
    ];
    for (body, status, kind, mentions) in cases {
        let (got, answer) = json_of(messages(&server, &body).await).await;
        assert_eq!(got, status, "{body}: {answer}");
        let (got_kind, message) = anthropic_error(&answer);
        assert_eq!(got_kind, kind, "{answer}");
        assert!(message.contains(mentions), "{message} names {mentions}");
    }
    // Not JSON, and not JSON at all (a form post: the guard's 415).
    let response = server
        .http
        .post(server.url("/v1/messages"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 400);
    assert_eq!(anthropic_error(&answer).0, "invalid_request_error");
    let response = server
        .http
        .post(server.url("/v1/messages"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 415);
    assert_eq!(anthropic_error(&answer).0, "invalid_request_error");
    // A Host that is not loopback (DNS rebinding) without keys: the guard's 421.
    let response = server
        .http
        .post(server.url("/v1/messages"))
        .header("host", "evil.example")
        .json(&hello("mock/echo", false))
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 421, "{answer}");
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "invalid_request_error");
    assert!(message.contains("evil.example"), "{message}");
    assert!(server.mock_chats().is_empty(), "nothing sent upstream");
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_are_anthropic_errors_and_recorded() {
    // One attempt per request: the mapping of a failure, not routing's
    // retries (tests/routing.rs), is under test.
    let server = TestServer::builder()
        .extra("[routing]\nretries = 0\n")
        .start()
        .await;
    // An upstream 500, streamed or not: the status passes through.
    for stream in [false, true] {
        let (status, answer) =
            json_of(messages(&server, &hello("mock/status:500", stream)).await).await;
        assert_eq!(status, 500, "{answer}");
        let (kind, message) = anthropic_error(&answer);
        assert_eq!(kind, "api_error");
        assert!(message.contains("HTTP 500"), "{message}");
    }
    // An upstream 429 keeps its Retry-After.
    let response = messages(&server, &hello("mock/status:429", false)).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 429);
    assert_eq!(anthropic_error(&answer).0, "rate_limit_error");

    // A stream the upstream cuts: an `error` event and no `message_stop`.
    for model in ["mock/drop", "mock/inband-error", "mock/malformed"] {
        let events = stream_events(&server, &hello(model, true)).await;
        let (last, data) = events.last().unwrap();
        assert_eq!(last, "error", "{model}: {events:?}");
        assert_eq!(data["error"]["type"], "api_error");
        assert!(!names(&events).contains(&"message_stop"), "{model}");
        assert_eq!(names(&events)[0], "message_start");
    }

    let calls = server.wait_calls(6).await;
    assert_eq!(calls.len(), 6);
    for call in &calls {
        assert_eq!(call["operation"], "messages");
        assert_eq!(call["status"], "error", "{call}");
        assert!(call["error"].is_string(), "{call}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn limits_answer_in_anthropic_shape() {
    let server = TestServer::builder()
        .server("max_body_bytes = 2048")
        .extra("[limits]\nmax_streams_per_key = 1\n")
        .start()
        .await;
    // One stream that hangs holds the only slot: the next is a fast 429.
    let hung = tokio::spawn(
        server
            .http
            .post(server.url("/v1/messages"))
            .json(&hello("mock/hang", true))
            .send(),
    );
    // The probe below must not race the hung stream for the only slot:
    // the slot is taken before the upstream is asked, so wait for that.
    eventually(
        Duration::from_secs(5),
        "the hung stream reached the upstream",
        || async {
            let asked = server.mock_chats().len();
            if asked == 1 {
                Ok(())
            } else {
                Err(asked)
            }
        },
    )
    .await;
    let refused = eventually(
        Duration::from_secs(5),
        "a second stream refused",
        || async {
            let (status, body) =
                json_or_text(messages(&server, &hello("mock/echo", true)).await).await;
            if status == 429 {
                Ok(body)
            } else {
                Err(body)
            }
        },
    )
    .await;
    let (kind, message) = anthropic_error(&refused);
    assert_eq!(kind, "rate_limit_error");
    assert!(message.contains("max_streams_per_key"), "{message}");
    hung.abort();

    // A body over server.max_body_bytes: 413 `request_too_large`.
    let mut big = hello("mock/echo", false);
    big["messages"][0]["content"] = json!("x".repeat(4096));
    let (status, answer) = json_of(messages(&server, &big).await).await;
    assert_eq!(status, 413);
    assert_eq!(anthropic_error(&answer).0, "request_too_large");
    server.shutdown().await;
}

#[tokio::test]
async fn x_api_key_authenticates_like_a_bearer_and_refusals_are_anthropic_errors() {
    let server = TestServer::start().await;
    let create = |role: &'static str, admin: Option<String>| {
        let server = &server;
        async move {
            let mut request = server.http.post(server.url("/v1/keys"));
            if let Some(admin) = admin {
                request = request.bearer_auth(admin);
            }
            let key: Value = request
                .json(&json!({"role": role}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            key["key"].as_str().unwrap().to_owned()
        }
    };
    let admin = create("admin", None).await;
    let read = create("read", Some(admin.clone())).await;
    let member = create("member", Some(admin.clone())).await;
    let send = |key: Option<(&'static str, String)>| {
        let server = &server;
        async move {
            let mut request = server
                .http
                .post(server.url("/v1/messages"))
                .header("anthropic-version", "2023-06-01")
                .json(&hello("mock/echo", false));
            if let Some((header, value)) = key {
                request = request.header(header, value);
            }
            json_of(request.send().await.unwrap()).await
        }
    };
    let (status, answer) = send(None).await;
    assert_eq!(status, 401, "{answer}");
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "authentication_error");
    assert!(message.contains("x-api-key"), "{message}");
    let (status, answer) = send(Some(("x-api-key", "mk_not_a_key".into()))).await;
    assert_eq!(status, 401);
    assert_eq!(anthropic_error(&answer).0, "authentication_error");
    let (status, answer) = send(Some(("x-api-key", read.clone()))).await;
    assert_eq!(status, 403);
    assert_eq!(anthropic_error(&answer).0, "permission_error");
    let (status, answer) = send(Some(("x-api-key", member.clone()))).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");
    let (status, _) = send(Some(("authorization", format!("Bearer {member}")))).await;
    assert_eq!(status, 200);
    // x-api-key works on every route, in that route's error shape.
    let response = server
        .http
        .get(server.url("/v1/calls"))
        .header("x-api-key", &read)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, problem) = json_of(
        server
            .http
            .get(server.url("/v1/calls"))
            .header("x-api-key", "mk_nope")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        problem["code"], "unauthorized",
        "a problem document: {problem}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn models_answer_in_anthropic_shape_with_the_anthropic_version_header() {
    let server = TestServer::start().await;
    let anthropic: Value = server
        .http
        .get(server.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data = anthropic["data"].as_array().unwrap();
    assert!(!data.is_empty());
    let echo = data
        .iter()
        .find(|m| m["id"] == "mock/echo")
        .expect("mock/echo listed");
    assert_eq!(echo["type"], "model");
    assert_eq!(echo["display_name"], "echo");
    assert!(
        echo["created_at"].as_str().unwrap().ends_with('Z'),
        "{echo}"
    );
    assert_eq!(echo["lifecycle"], "active");
    let openai = server.get_json("/v1/models").await;
    let same = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "mock/echo");
    assert_eq!(echo["max_input_tokens"], same.unwrap()["context_window"]);
    assert!(echo["max_input_tokens"].is_u64(), "{echo}");
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["first_id"], data[0]["id"]);
    assert_eq!(anthropic["last_id"], data[data.len() - 1]["id"]);
    // Without the header: OpenAI's shape, as before.
    assert_eq!(openai["object"], "list");
    assert_eq!(openai["data"][0]["object"], "model");
    assert_eq!(openai["data"].as_array().unwrap().len(), data.len());
    server.shutdown().await;
}

#[tokio::test]
async fn count_tokens_is_an_anthropic_not_found_naming_it_unsupported() {
    let server = TestServer::start().await;
    let response = server
        .http
        .post(server.url("/v1/messages/count_tokens"))
        .json(&json!({"model": "mock/echo", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let (status, answer) = json_of(response).await;
    assert_eq!(status, 404);
    let (kind, message) = anthropic_error(&answer);
    assert_eq!(kind, "not_found_error");
    assert!(message.contains("not supported"), "{message}");
    server.shutdown().await;
}

#[tokio::test]
async fn count_tokens_on_a_llama_cpp_provider_matches_the_message_usage() {
    use modelyard_testkit::{Flavour, MockModel, MockOptions};
    let server = TestServer::builder()
        .mock(
            "lc",
            MockOptions::new(Flavour::LlamaCpp, vec![MockModel::new("m", Some(4_096))]),
        )
        .providers("[[providers]]\nname = \"lc\"\nkind = \"llama-cpp\"\nbase_url = \"{mock:lc}\"\n")
        .start()
        .await;
    let body = json!({
        "model": "lc/m",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello brave new world"}],
    });
    let response = server
        .http
        .post(server.url("/v1/messages/count_tokens"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, counted) = json_of(response).await;
    assert_eq!(status, 200, "{counted}");
    // The mock's template is the messages' text; one token per word.
    assert_eq!(counted, json!({"input_tokens": 6}));
    let mut request = body.clone();
    request["max_tokens"] = json!(8);
    let (status, message) = json_of(messages(&server, &request).await).await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["usage"]["input_tokens"], counted["input_tokens"]);
    // What the provider was asked: the chat messages, then their rendering.
    let asked: Vec<_> = server
        .named("lc")
        .requests()
        .iter()
        .filter(|r| r.path == "/apply-template" || r.path == "/tokenize")
        .map(|r| (r.path.clone(), r.json().unwrap()))
        .collect();
    assert_eq!(asked.len(), 2, "{asked:?}");
    assert_eq!(
        asked[0].1,
        json!({"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "hello brave new world"}]})
    );
    assert_eq!(
        asked[1].1,
        json!({"content": "Be brief.\nhello brave new world", "add_special": true})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hostile_upstream_bytes_end_in_anthropic_errors_never_a_panic() {
    let hostile = modelyard_testkit::hostile::HostileUpstream::start().await;
    let server = TestServer::builder()
        .providers(&format!(
            "[[providers]]\nname = \"h\"\nkind = \"openai\"\nbase_url = \"{}\"\n",
            hostile.base_url()
        ))
        .start()
        .await;
    for model in [
        "ok",
        "drop",
        "reset",
        "bad-json",
        "non-utf8",
        "no-data",
        "huge-index",
        "usage-max",
        "usage-overflow",
        "status-503",
        "redirect",
        "auth-401",
    ] {
        for stream in [false, true] {
            let response = messages(&server, &hello(&format!("h/{model}"), stream)).await;
            let status = response.status().as_u16();
            let is_sse = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream");
            let text = response.text().await.unwrap();
            let what = format!("{model} stream={stream}: {status} {text:.300}");
            if !is_sse {
                let body: Value = serde_json::from_str(&text).expect(&what);
                if status == 200 {
                    assert_eq!(body["type"], "message", "{what}");
                } else {
                    anthropic_error(&body);
                    assert!(status >= 500, "{what}");
                }
                continue;
            }
            assert_eq!(status, 200, "{what}");
            let events = events_of(&text);
            let last = events.last().unwrap().0.as_str();
            match model {
                "ok" | "usage-max" | "usage-overflow" => {
                    assert_eq!(last, "message_stop", "{what}");
                    let usage = &events[events.len() - 2].1["usage"];
                    assert!(usage["output_tokens"].as_u64().unwrap() <= u64::from(u32::MAX));
                }
                _ => assert_eq!(last, "error", "{what}"),
            }
        }
    }
    // Every request that reached a provider left one record.
    let calls = server.wait_calls(2 * 12).await;
    assert_eq!(calls.len(), 2 * 12);
    assert!(calls.iter().all(|c| c["operation"] == "messages"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_and_is_recorded() {
    let server = TestServer::start().await;
    let mut response = messages(&server, &hello("mock/slow:100", true)).await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start\n"));
    drop(response);
    eventually(
        Duration::from_secs(5),
        "the upstream stream cancelled",
        || async {
            match server.mock.cancelled_streams() {
                1 => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
    let call = server.only_call().await;
    assert_eq!(call["operation"], "messages");
    assert_eq!(call["status"], "error");
    assert_eq!(
        call["error"],
        "client disconnected before the response completed"
    );
    server.shutdown().await;
}
