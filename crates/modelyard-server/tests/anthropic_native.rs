//! End-to-end tests of the Messages pass-through: `POST /v1/messages` to a
//! provider that speaks Anthropic's Messages API natively (kind
//! `anthropic`, or `messages_api = true`), against the testkit's mock in
//! its Anthropic flavour: the bytes that reach the upstream and come back,
//! the `model` splice both ways, Anthropic's credentials and version
//! headers, usage in the call log, routing retries across native and
//! translated targets, errors, a client that leaves, token counts, and the
//! refusal of chat completions to an `anthropic` provider.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::{
    eventually, Flavour, MockModel, MockOptions, CACHE_CREATION_TOKENS, CACHE_READ_TOKENS,
};
use serde_json::{json, Value};

/// The models the Anthropic mock lists (more than one page of
/// [`modelyard_testkit::ANTHROPIC_PAGE_SIZE`]).
const LISTED: &[&str] = &[
    "claude-a",
    "claude-b",
    "status:429",
    "status:500",
    "status:400",
    "slow:100",
    "drop",
    "inband-error",
    "tools",
];

fn anthropic_mock() -> MockOptions {
    MockOptions::new(
        Flavour::Anthropic,
        LISTED.iter().map(|id| MockModel::new(*id, None)).collect(),
    )
}

/// An `anthropic` provider `anth` (key from `ANTH_KEY`) beside the default
/// OpenAI-compatible `mock`, plus `extra` TOML.
async fn server_with(extra: &str) -> TestServer {
    TestServer::builder()
        .mock("anth", anthropic_mock())
        .providers(&format!(
            "{}\n[[providers]]\nname = \"anth\"\nkind = \"anthropic\"\nbase_url = \"{{mock:anth}}\"\napi_key_env = \"ANTH_KEY\"\n",
            common::MOCK_PROVIDER
        ))
        .env(&[("ANTH_KEY", "sk-ant-test")])
        .extra(extra)
        .start()
        .await
}

/// A Messages body written by hand (odd spacing, fields and blocks the
/// translation would drop or refuse), so byte-for-byte pass-through shows.
fn raw_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{ "model" :  "{model}", "max_tokens": 64, "stream": {stream},
  "system": [{{"type": "text", "text": "Be brief.", "cache_control": {{"type": "ephemeral"}}}}],
  "thinking": {{"type": "enabled", "budget_tokens": 1024}},
  "messages": [{{"role": "user", "content": [
     {{"type": "document", "source": {{"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}}},
     {{"type": "text", "text": "hello brave new world"}}]}}],
  "x_extra": [1, 2.50, "\u00e9"] }}"#
    )
}

/// A Messages body the translation accepts too (for routes that mix
/// native and translated targets).
fn plain_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model": "{model}", "max_tokens": 64, "stream": {stream},
  "messages": [{{"role": "user", "content": "hello brave new world"}}]}}"#
    )
}

async fn post(
    server: &TestServer,
    path: &str,
    body: String,
    beta: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .http
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(beta) = beta {
        request = request
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", beta);
    }
    request.send().await.unwrap()
}

/// What the mock itself answers `body` (sent straight to it).
async fn straight(server: &TestServer, body: String) -> String {
    server
        .http
        .post(format!("{}/v1/messages", server.named("anth").base_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Asserts `body` is exactly Anthropic's error shape; returns `(type, message)`.
fn anthropic_error(body: &Value) -> (String, String) {
    assert_eq!(body["type"], "error", "{body}");
    let error = body["error"].as_object().unwrap();
    assert_eq!(error.len(), 2, "only `type` and `message`: {body}");
    (
        error["type"].as_str().unwrap().to_owned(),
        error["message"].as_str().unwrap().to_owned(),
    )
}

fn messages_requests(server: &TestServer) -> Vec<modelyard_testkit::RecordedRequest> {
    server
        .named("anth")
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages")
        .collect()
}

#[tokio::test]
async fn a_message_passes_through_byte_for_byte_but_model_with_anthropic_headers() {
    let server = server_with("").await;
    // The listing was read in Anthropic's shape, every page of it.
    let models = server.get_json("/v1/models").await;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .filter(|id| id.starts_with("anth/"))
        .collect();
    assert_eq!(ids.len(), LISTED.len(), "{models}");
    let provider = server.get_json("/v1/providers/anth").await;
    assert_eq!(provider["kind"], "anthropic");
    assert_eq!(provider["messagesApi"], true);
    assert_eq!(provider["status"], "online");
    assert_eq!(provider["modelCount"], LISTED.len());
    assert_eq!(
        provider["models"][0]["displayName"], "Display claude-a",
        "{provider}"
    );
    assert_eq!(
        server.get_json("/v1/providers/mock").await["messagesApi"],
        false
    );
    let listing: Vec<_> = server
        .named("anth")
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/models")
        .collect();
    assert!(listing.len() >= 5, "pages of 2: {}", listing.len());
    assert_eq!(listing[0].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(listing[0].header("authorization"), None);

    let sent = raw_body("anth/claude-a", false);
    let response = post(&server, "/v1/messages", sent, Some("beta-1,beta-2")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let got = response.text().await.unwrap();

    // Upstream: the client's bytes with only `model` changed, Anthropic's
    // credentials and the client's version / beta headers.
    let reached = messages_requests(&server);
    assert_eq!(reached.len(), 1);
    let upstream_body = raw_body("claude-a", false);
    assert_eq!(String::from_utf8_lossy(&reached[0].body), upstream_body);
    assert_eq!(reached[0].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(reached[0].header("authorization"), None);
    assert_eq!(reached[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(reached[0].header("anthropic-beta"), Some("beta-1,beta-2"));
    // Client: the upstream's bytes with only `model` changed, to the id it sent.
    let direct = straight(&server, upstream_body).await;
    assert!(direct.contains(r#""model":"claude-a""#), "{direct}");
    assert_eq!(
        got,
        direct.replace(r#""model":"claude-a""#, r#""model":"anth/claude-a""#)
    );

    // The call log: operation `messages`, Anthropic's usage in OpenAI's
    // terms (input + cache read + cache creation = prompt).
    let call = server.only_call().await;
    assert_eq!(call["operation"], "messages");
    assert_eq!(call["status"], "ok");
    assert_eq!(call["modelId"], "anth/claude-a");
    assert_eq!(call["upstreamModel"], "claude-a");
    assert_eq!(call["responseText"], "echo: hello brave new world");
    assert_eq!(call["finishReason"], "end_turn");
    // The mock counts words: 2 of the system prompt, 4 of the message.
    let input = 6;
    assert_eq!(
        call["usage"]["promptTokens"],
        input + CACHE_READ_TOKENS + CACHE_CREATION_TOKENS
    );
    assert_eq!(call["usage"]["cachedPromptTokens"], CACHE_READ_TOKENS);
    assert_eq!(call["usage"]["completionTokens"], 5);
    assert_eq!(call["request"]["thinking"]["budget_tokens"], 1024);

    // Without the client's version header the provider's default goes.
    let response = post(
        &server,
        "/v1/messages",
        raw_body("anth/claude-b", false),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    // (The second request the mock saw was the test's own, straight to it.)
    let reached = messages_requests(&server);
    assert_eq!(reached.len(), 3);
    assert_eq!(reached[2].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(reached[2].header("anthropic-beta"), None);
    assert_eq!(reached[2].header("x-api-key"), Some("sk-ant-test"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_stream_passes_through_with_model_rewritten_in_message_start_and_usage_recorded() {
    let server = server_with("").await;
    let response = post(&server, "/v1/messages", raw_body("anth/tools", true), None).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let got = response.text().await.unwrap();
    let direct = straight(&server, raw_body("tools", true)).await;
    assert!(direct.starts_with("event: message_start\n"), "{direct}");
    assert!(direct.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    // Only `message_start`'s model differs.
    assert_eq!(
        got,
        direct.replacen(r#""model":"tools""#, r#""model":"anth/tools""#, 1)
    );
    assert_ne!(got, direct);

    let call = server.only_call().await;
    assert_eq!(call["status"], "ok", "{call}");
    assert_eq!(call["stream"], true);
    assert_eq!(call["finishReason"], "tool_use");
    assert_eq!(
        call["toolCalls"],
        json!([{"id": "toolu_mock_1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}])
    );
    assert_eq!(
        call["usage"]["promptTokens"],
        6 + CACHE_READ_TOKENS + CACHE_CREATION_TOKENS
    );
    assert_eq!(call["usage"]["cachedPromptTokens"], CACHE_READ_TOKENS);
    // message_delta's output_tokens (cumulative) win over message_start's.
    assert_eq!(call["usage"]["completionTokens"], 2);
    assert!(call["firstTokenAt"].is_string(), "{call}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_route_retries_a_429_on_another_target_native_or_translated() {
    let server = server_with(
        r#"
[routing]
backoff_ms = 1

[[routes]]
name = "native-first"
targets = ["anth/status:429", "mock/echo"]
strategy = "round-robin"
affinity = "none"

[[routes]]
name = "translated-first"
targets = ["mock/status:429", "anth/claude-a"]
strategy = "round-robin"
affinity = "none"
"#,
    )
    .await;
    // 429 from the native target, then the translated one answers.
    let response = post(
        &server,
        "/v1/messages",
        plain_body("native-first", false),
        None,
    )
    .await;
    let status = response.status();
    let message: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["model"], "native-first");
    assert_eq!(message["content"][0]["text"], "echo: hello brave new world");
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    let calls = server.wait_calls(2).await;
    // Newest first.
    assert_eq!(calls[1]["modelId"], "anth/status:429");
    assert_eq!(calls[1]["httpStatus"], 429);
    assert_eq!(calls[1]["status"], "error");
    assert_eq!(calls[0]["modelId"], "mock/echo");
    assert_eq!(calls[0]["status"], "ok");
    assert_eq!(calls[0]["attempt"], 2);
    // The translated attempt got a chat request, the native one the bytes.
    assert_eq!(server.mock_chats().len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&messages_requests(&server)[0].body),
        plain_body("status:429", false)
    );

    // 429 from the translated target, then the native one passes through.
    let response = post(
        &server,
        "/v1/messages",
        plain_body("translated-first", true),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let got = response.text().await.unwrap();
    let direct = straight(&server, plain_body("claude-a", true)).await;
    assert_eq!(
        got,
        direct.replacen(r#""model":"claude-a""#, r#""model":"translated-first""#, 1)
    );
    let calls = server.wait_calls(4).await;
    assert_eq!(calls[1]["modelId"], "mock/status:429");
    assert_eq!(calls[0]["modelId"], "anth/claude-a");
    assert_eq!(calls[0]["route"], "translated-first");
    assert_eq!(calls[0]["status"], "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_keep_anthropic_shape_and_status_and_are_recorded() {
    let server = server_with("[routing]\nretries = 0\n").await;
    for (model, status, kind) in [
        ("anth/status:500", 500, "api_error"),
        ("anth/status:400", 400, "invalid_request_error"),
        ("anth/status:429", 429, "rate_limit_error"),
    ] {
        for stream in [false, true] {
            let response = post(&server, "/v1/messages", raw_body(model, stream), None).await;
            assert_eq!(response.status(), status, "{model}");
            let body: Value = response.json().await.unwrap();
            let (got_kind, message) = anthropic_error(&body);
            assert_eq!(got_kind, kind, "{body}");
            assert!(message.contains("mock upstream status"), "{message}");
            assert!(message.contains("anth"), "names the provider: {message}");
        }
    }
    // A 200 whose body is an error object is an error, not a message.
    let response = post(
        &server,
        "/v1/messages",
        raw_body("anth/inband-error", false),
        None,
    )
    .await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert!(anthropic_error(&body).1.contains("overloaded"), "{body}");

    // Mid-stream: the upstream's own `error` event passes through as it is.
    let response = post(
        &server,
        "/v1/messages",
        raw_body("anth/inband-error", true),
        None,
    )
    .await;
    let got = response.text().await.unwrap();
    let direct = straight(&server, raw_body("inband-error", true)).await;
    assert!(
        direct.ends_with("\n\n") && direct.contains("event: error\n"),
        "{direct}"
    );
    assert_eq!(
        got,
        direct.replacen(
            r#""model":"inband-error""#,
            r#""model":"anth/inband-error""#,
            1
        )
    );
    // A stream the upstream cuts: one `error` event of ours, no message_stop.
    let response = post(&server, "/v1/messages", raw_body("anth/drop", true), None).await;
    let got = response.text().await.unwrap();
    let last = got.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{got}");
    let data: Value = serde_json::from_str(last.split_once("data: ").unwrap().1).unwrap();
    assert_eq!(data["error"]["type"], "api_error");
    assert!(!got.contains("message_stop"));

    let calls = server.wait_calls(9).await;
    assert_eq!(calls.len(), 9);
    for call in &calls {
        assert_eq!(call["operation"], "messages");
        assert_eq!(call["status"], "error", "{call}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_ends_the_upstream_request() {
    let server = server_with("").await;
    let mut response = post(
        &server,
        "/v1/messages",
        raw_body("anth/slow:100", true),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let first = response.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: message_start\n"));
    drop(response);
    eventually(
        Duration::from_secs(5),
        "the upstream stream cancelled",
        || async {
            match server.named("anth").cancelled_streams() {
                1 => Ok(()),
                n => Err(n),
            }
        },
    )
    .await;
    let call = server.only_call().await;
    assert_eq!(call["status"], "error");
    assert_eq!(
        call["error"],
        "client disconnected before the response completed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn chat_completions_to_an_anthropic_provider_is_a_400_and_sends_nothing() {
    let server = server_with("").await;
    let response = server
        .chat(&json!({"model": "anth/claude-a", "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "messages_api_only");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("anth") && message.contains("/v1/messages"),
        "{message}"
    );
    assert!(
        server
            .named("anth")
            .requests()
            .iter()
            .all(|r| r.path == "/v1/models"),
        "only discovery reached the provider"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn count_tokens_goes_to_the_native_count_endpoint() {
    let server = server_with("").await;
    let body = r#"{"model": "anth/claude-a", "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello brave new world"}]}"#;
    let response = post(
        &server,
        "/v1/messages/count_tokens",
        body.to_owned(),
        Some("token-counting-2024-11-01"),
    )
    .await;
    let status = response.status();
    let counted: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{counted}");
    assert_eq!(counted, json!({"input_tokens": 6}));
    let asked: Vec<_> = server
        .named("anth")
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/messages/count_tokens")
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&asked[0].body),
        body.replace("anth/claude-a", "claude-a")
    );
    assert_eq!(asked[0].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(
        asked[0].header("anthropic-beta"),
        Some("token-counting-2024-11-01")
    );
    // An upstream refusal keeps its status and Anthropic's shape.
    let response = post(
        &server,
        "/v1/messages/count_tokens",
        r#"{"model": "anth/status:429", "messages": []}"#.to_owned(),
        None,
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(anthropic_error(&body).0, "rate_limit_error");
    server.shutdown().await;
}

#[tokio::test]
async fn messages_api_true_sends_messages_to_a_llama_cpp_provider_natively() {
    let server = TestServer::builder()
        .mock(
            "lc",
            MockOptions::new(Flavour::LlamaCpp, vec![MockModel::new("m", Some(4_096))]),
        )
        .providers(
            "[[providers]]\nname = \"lc\"\nkind = \"llama-cpp\"\nbase_url = \"{mock:lc}\"\nmessages_api = true\nset_params = { top_k = 1 }\nstrip_params = [\"thinking\"]\n",
        )
        .start()
        .await;
    for stream in [false, true] {
        let response = post(&server, "/v1/messages", raw_body("lc/m", stream), None).await;
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("echo: ") || text.contains("echo:"), "{text}");
    }
    let lc = server.named("lc");
    assert!(
        lc.requests()
            .iter()
            .all(|r| r.path != "/v1/chat/completions"),
        "nothing translated"
    );
    let sent: Vec<Value> = lc
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .map(|r| r.json().unwrap())
        .collect();
    assert_eq!(sent.len(), 2);
    for body in &sent {
        // The provider's rules apply: `thinking` stripped, `top_k` set.
        assert_eq!(body["model"], "m");
        assert_eq!(body["top_k"], 1);
        assert!(body.get("thinking").is_none(), "{body}");
        assert_eq!(body["messages"][0]["content"][0]["type"], "document");
    }
    server.shutdown().await;
}
