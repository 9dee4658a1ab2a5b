//! End-to-end tests of the OpenAI Responses front (`POST /v1/responses`,
//! `GET /v1/responses/{id}`): the real server in front of the in-process
//! mock upstream (an OpenAI chat-completions server whose behaviour is
//! chosen by the model name: `echo` answers `echo: <last user text>`,
//! `tool-call:<name>` calls that tool until a result follows the last user
//! message, then answers `tool said: <result>`), driven over HTTP as the
//! `openai` SDK would: field mapping both ways, stored responses as
//! conversation turns (history, model override, function tools across two
//! requests), `store: false`, the typed SSE events, errors in OpenAI's
//! envelope, the call log.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use serde_json::{json, Value};

async fn server() -> TestServer {
    TestServer::builder()
        .listed(&["echo", "mock-model", "tool-call:get_weather"])
        .start()
        .await
}

/// `POST /v1/responses` with `body`: status and body (JSON, or the text).
async fn create(server: &TestServer, body: &Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST /v1/responses`, asserting 200; the response object.
async fn created(server: &TestServer, body: &Value) -> Value {
    let (status, response) = create(server, body).await;
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["object"], "response", "{response}");
    response
}

/// Asserts `body` is exactly OpenAI's error envelope; returns the error.
fn envelope(body: &Value) -> &Value {
    let object = body.as_object().unwrap_or_else(|| panic!("object: {body}"));
    assert_eq!(object.len(), 1, "only `error`: {body}");
    let error = &body["error"];
    let keys: Vec<&str> = error
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 4, "{body}");
    for key in ["message", "type", "param", "code"] {
        assert!(keys.contains(&key), "{key} in {body}");
    }
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    error
}

/// The `(type, data)` pairs of a streamed response, asserting the SSE
/// framing, `data.type == event` and `sequence_number`s 0, 1, 2, ….
async fn stream(server: &TestServer, body: &Value) -> Vec<(String, Value)> {
    let response = server
        .http
        .post(server.url("/v1/responses"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    let events: Vec<(String, Value)> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (head, data) = event.split_once('\n').unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{event}");
            (name, data)
        })
        .collect();
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap())
        .map(|part| part["text"].as_str().unwrap())
        .collect()
}

async fn conversations(server: &TestServer) -> Vec<Value> {
    server.get_ok("/v1/conversations").await["data"]
        .as_array()
        .unwrap()
        .clone()
}

const TEXT_EVENTS: [&str; 10] = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
    "",
];

/// The event names with runs of text deltas folded into one.
fn folded(events: &[(String, Value)]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for name in names(events) {
        if out.last() != Some(&name) || name != "response.output_text.delta" {
            out.push(name);
        }
    }
    out
}

#[tokio::test]
async fn a_stored_response_is_a_conversation_turn_and_reads_back() {
    let server = server().await;
    let response = created(
        &server,
        &json!({
            "model": "mock/echo", "input": "hello brave new world",
            "instructions": "Be brief.", "temperature": 0.3, "top_p": 0.5,
            "max_output_tokens": 40, "metadata": {"app": "test"},
        }),
    )
    .await;

    // What the upstream got: a chat request, instructions as the system message.
    let sent = server.mock_chats();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["model"], "echo");
    assert_eq!(
        sent[0]["messages"],
        json!([{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "hello brave new world"}])
    );
    assert_eq!(sent[0]["temperature"], 0.3);
    assert_eq!(sent[0]["top_p"], 0.5);
    assert_eq!(sent[0]["max_tokens"], 40);

    // What the client got.
    let id = response["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{id}");
    assert_eq!(response["status"], "completed");
    assert_eq!(response["model"], "mock/echo");
    assert_eq!(response["store"], true);
    assert_eq!(response["instructions"], "Be brief.");
    assert_eq!(response["temperature"], 0.3);
    assert_eq!(response["max_output_tokens"], 40);
    assert_eq!(response["metadata"], json!({"app": "test"}));
    assert_eq!(response["output"].as_array().unwrap().len(), 1);
    let item = &response["output"][0];
    assert_eq!(item["type"], "message");
    assert_eq!(item["role"], "assistant");
    assert_eq!(item["status"], "completed");
    assert_eq!(
        item["content"],
        json!([{"type": "output_text", "text": "echo: hello brave new world",
                "annotations": [], "logprobs": []}])
    );
    // The mock counts words: 2 (system) + 4 prompt words, 5 answer words.
    assert_eq!(
        response["usage"],
        json!({"input_tokens": 6, "input_tokens_details": {"cached_tokens": 0},
               "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0},
               "total_tokens": 11})
    );

    // It is a conversation with one turn, like any other.
    let listed = conversations(&server).await;
    assert_eq!(listed.len(), 1);
    let conv = response["conversation"]["id"].as_str().unwrap();
    assert_eq!(listed[0]["id"], conv);
    assert_eq!(listed[0]["model"], "mock/echo");
    let turns = server
        .get_ok(&format!("/v1/conversations/{conv}/turns"))
        .await;
    assert_eq!(turns["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        format!("resp_{}", turns["data"][0]["id"].as_str().unwrap()),
        id
    );

    // Read back by id: the same output and usage.
    let read = server.get_json(&format!("/v1/responses/{id}")).await;
    assert_eq!(read["id"], id);
    assert_eq!(read["status"], "completed");
    assert_eq!(read["output"], response["output"]);
    assert_eq!(read["usage"], response["usage"]);
    server.shutdown().await;
}

#[tokio::test]
async fn previous_response_id_keeps_the_history_and_a_model_override_persists() {
    let server = server().await;
    let first = created(
        &server,
        &json!({"model": "mock/echo", "input": "one", "instructions": "Only once."}),
    )
    .await;
    let second = created(
        &server,
        &json!({"model": "mock/mock-model", "input": "two",
                "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(second["previous_response_id"], first["id"]);
    assert_eq!(second["conversation"], first["conversation"]);
    let third = created(
        &server,
        &json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "three"}]}],
                "previous_response_id": second["id"]}),
    )
    .await;
    assert_eq!(third["status"], "completed");
    assert_eq!(third["model"], "mock/mock-model");

    let sent = server.mock_chats();
    assert_eq!(sent.len(), 3);
    // The second request carries the first exchange; the instructions were
    // the first response's only.
    assert_eq!(sent[1]["model"], "mock-model");
    assert_eq!(
        sent[1]["messages"],
        json!([{"role": "user", "content": "one"},
               {"role": "assistant", "content": "echo: one"},
               {"role": "user", "content": "two"}])
    );
    // The override persisted: the third request, without a model, uses it.
    assert_eq!(sent[2]["model"], "mock-model");
    assert_eq!(sent[2]["messages"].as_array().unwrap().len(), 5);
    // One text part is sent as a plain string.
    assert_eq!(sent[2]["messages"][4]["content"], "three");

    let listed = conversations(&server).await;
    assert_eq!(listed.len(), 1, "{listed:#?}");
    assert_eq!(listed[0]["model"], "mock/mock-model");
    let conv = listed[0]["id"].as_str().unwrap();
    let turns = server
        .get_ok(&format!("/v1/conversations/{conv}/turns"))
        .await;
    assert_eq!(turns["data"].as_array().unwrap().len(), 3);

    // Only the latest response continues (no forks).
    let (status, body) = create(
        &server,
        &json!({"input": "fork", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(envelope(&body)["code"], "previous_response_not_latest");
    server.shutdown().await;
}

#[tokio::test]
async fn a_function_tool_round_trip_across_two_requests() {
    let server = server().await;
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Weather",
                        "parameters": {"type": "object",
                                       "properties": {"question": {"type": "string"}}}}]);
    let first = created(
        &server,
        &json!({"model": "mock/tool-call:get_weather", "input": "Weather in Paris?",
                "tools": tools, "tool_choice": "auto"}),
    )
    .await;
    assert_eq!(first["status"], "completed");
    assert_eq!(first["tools"], tools);
    let output = first["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "{first}");
    let call = &output[0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["call_id"], "call_mock_1");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["arguments"], "{\"question\":\"Weather in Paris?\"}");
    assert_eq!(call["status"], "completed");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    // The upstream got the tool in the chat shape.
    let sent = server.mock_chats();
    assert_eq!(
        sent[0]["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"question": {"type": "string"}}}}}])
    );
    assert_eq!(sent[0]["tool_choice"], "auto");

    // Answering without the output is refused, as OpenAI does.
    let (status, body) = create(
        &server,
        &json!({"input": "and?", "previous_response_id": first["id"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(envelope(&body)["code"], "function_call_output_required");

    let second = created(
        &server,
        &json!({"previous_response_id": first["id"], "tools": tools,
                "input": [{"type": "function_call_output", "call_id": "call_mock_1",
                           "output": "sunny, 21 C"}]}),
    )
    .await;
    assert_ne!(second["id"], first["id"]);
    assert_eq!(second["status"], "completed");
    assert_eq!(output_text(&second), "tool said: sunny, 21 C");
    let sent = server.mock_chats();
    assert_eq!(sent.len(), 2);
    let messages = sent[1]["messages"].as_array().unwrap();
    assert_eq!(
        messages[messages.len() - 1],
        json!({"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny, 21 C"})
    );
    assert_eq!(
        messages[messages.len() - 2]["tool_calls"][0]["id"],
        "call_mock_1"
    );

    // One conversation, one turn (resumed); both responses read back.
    assert_eq!(conversations(&server).await.len(), 1);
    let read = server
        .get_json(&format!("/v1/responses/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["output"], first["output"]);
    let read = server
        .get_json(&format!("/v1/responses/{}", second["id"].as_str().unwrap()))
        .await;
    assert_eq!(read["output"], second["output"]);
    server.shutdown().await;
}

#[tokio::test]
async fn streams_are_typed_events_in_order_with_sequence_numbers() {
    let server = server().await;
    for store in [true, false] {
        let events = stream(
            &server,
            &json!({"model": "mock/echo", "input": "hello brave new world",
                    "stream": true, "store": store}),
        )
        .await;
        assert_eq!(folded(&events), TEXT_EVENTS[..9], "store {store}");
        let text: String = events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap())
            .collect();
        assert_eq!(text, "echo: hello brave new world", "store {store}");
        let created = &events[0].1["response"];
        let completed = &events.last().unwrap().1["response"];
        assert_eq!(created["status"], "in_progress");
        assert_eq!(created["id"], completed["id"]);
        assert_eq!(completed["status"], "completed");
        assert_eq!(completed["store"], store);
        assert_eq!(output_text(completed), "echo: hello brave new world");
        assert_eq!(completed["usage"]["input_tokens"], 4, "store {store}");
        assert_eq!(completed["usage"]["output_tokens"], 5, "store {store}");
        assert_eq!(completed["usage"]["total_tokens"], 9, "store {store}");
        // The item ids of the events are the final response's.
        let added = events
            .iter()
            .find(|(n, _)| n == "response.output_item.added")
            .unwrap();
        assert_eq!(added.1["item"]["id"], completed["output"][0]["id"]);
    }
    // A tool call streams as a function_call item with its arguments.
    let events = stream(
        &server,
        &json!({"model": "mock/tool-call:get_weather", "input": "Weather?", "stream": true,
                "tools": [{"type": "function", "name": "get_weather", "parameters": {}}]}),
    )
    .await;
    let names = names(&events);
    let added = names
        .iter()
        .position(|n| *n == "response.output_item.added")
        .unwrap();
    assert_eq!(events[added].1["item"]["type"], "function_call");
    assert_eq!(events[added].1["item"]["name"], "get_weather");
    assert!(names.contains(&"response.function_call_arguments.delta"));
    let done = events
        .iter()
        .find(|(n, _)| n == "response.function_call_arguments.done")
        .unwrap();
    assert_eq!(done.1["arguments"], "{\"question\":\"Weather?\"}");
    assert_eq!(
        &names[names.len() - 2..],
        ["response.output_item.done", "response.completed"]
    );
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["output"][0]["call_id"], "call_mock_1");
    server.shutdown().await;
}

#[tokio::test]
async fn store_false_leaves_no_conversation_and_is_in_the_call_log() {
    let server = server().await;
    let response = created(
        &server,
        &json!({"model": "mock/echo", "store": false, "instructions": "Be brief.",
                "input": [{"role": "user", "content": "first"},
                          {"role": "assistant", "content": "ok"},
                          {"role": "user", "content": "hello brave new world"}],
                "max_output_tokens": 30, "user": "user-7"}),
    )
    .await;
    assert_eq!(response["store"], false);
    assert_eq!(output_text(&response), "echo: hello brave new world");
    assert!(response.get("conversation").is_none());
    let sent = server.mock_chats();
    assert_eq!(
        sent[0],
        json!({"max_tokens": 30, "user": "user-7", "model": "echo",
               "messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "first"},
                            {"role": "assistant", "content": "ok"},
                            {"role": "user", "content": "hello brave new world"}],
               "stream": false})
    );
    assert!(conversations(&server).await.is_empty());

    // The call log: one `responses` call with the usage.
    let call = server.only_call().await;
    assert_eq!(call["operation"], "responses");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["modelId"], "mock/echo");
    assert_eq!(call["usage"]["promptTokens"], 8);
    assert_eq!(call["usage"]["completionTokens"], 5);
    assert_eq!(response["usage"]["input_tokens"], 8);

    // Not stored: not readable.
    let response = server
        .http
        .get(server.url(&format!(
            "/v1/responses/{}",
            response["id"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(envelope(&body)["code"], "response_not_found");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_openai_envelopes() {
    let server = server().await;
    // An unknown previous response: 404.
    let (status, body) = create(
        &server,
        &json!({"model": "mock/echo", "input": "x",
                "previous_response_id": "resp_0193aaaa-0000-7000-8000-000000000000"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let error = envelope(&body);
    assert_eq!(error["type"], "invalid_request_error");
    assert_eq!(error["param"], "previous_response_id");
    assert_eq!(error["code"], "response_not_found");
    let (status, body) = create(
        &server,
        &json!({"input": "x", "previous_response_id": "not-an-id"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    envelope(&body);

    // Malformed input: 400 naming the field.
    for (request, param) in [
        (json!({"model": "mock/echo"}), "input"),
        (
            json!({"model": "mock/echo", "input": [{"type": "computer_call"}]}),
            "input",
        ),
        (
            json!({"model": "mock/echo", "input": [{"role": "user", "content": 3}]}),
            "input",
        ),
        (
            json!({"model": "mock/echo", "input": "x", "tools": [{"type": "function"}]}),
            "tools",
        ),
        (
            json!({"model": "mock/echo", "input": "x", "tool_choice": 7}),
            "tool_choice",
        ),
        (
            json!({"model": "mock/echo",
                   "input": [{"type": "function_call_output", "call_id": "c", "output": "o"}]}),
            "",
        ),
    ] {
        let (status, body) = create(&server, &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        let error = envelope(&body);
        assert_eq!(error["type"], "invalid_request_error", "{body}");
        if !param.is_empty() {
            assert_eq!(error["param"], param, "{body}");
        }
    }
    // Not JSON.
    let response = server
        .http
        .post(server.url("/v1/responses"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    envelope(&response.json().await.unwrap());
    // An unknown model: 404 before any conversation is made.
    let (status, body) = create(&server, &json!({"model": "mock/nope", "input": "x"})).await;
    assert!(status == 404 || status == 400, "{status}: {body}");
    envelope(&body);
    assert!(conversations(&server).await.is_empty());
    assert!(server.mock_chats().is_empty());
    server.shutdown().await;
}
