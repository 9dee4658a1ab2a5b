//! Custom base URLs and the SSRF guard (`[security] allow_custom_base_urls`,
//! `base_url_allowlist`): metadata addresses in every spelling are refused
//! with 422, an allowlisted custom base URL serves turns (chat, advisor,
//! tool results) end to end, a host name that resolves to a refused address
//! never connects (a fake resolver injected at the upstream crate's level),
//! and a redirect to a private address is not followed.
//!
//! Everything listens on 127.0.0.1; every wait is bounded.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::conv::{create, get, send, start_turn, LIMIT};
use common::TestServer;
use futures_util::future::BoxFuture;
use modelyard_testkit::{eventually, MockOptions, MockUpstream};
use modelyard_upstream::ssrf::{AddressPolicy, GuardedResolver, Lookup};
use modelyard_upstream::{ProviderClient, Timeouts, UpstreamError};
use serde_json::{json, Value};

use url::Url;

const LISTED: &[&str] = &["echo", "tool-call:get_weather", "tool-call:advisor"];

/// Custom base URLs on, with `allowlist` (TOML array items).
fn security(allowlist: &str) -> String {
    format!("[security]\nallow_custom_base_urls = true\nbase_url_allowlist = [{allowlist}]\n")
}

/// A server with the `mock` provider and a second mock, `other`, that no
/// provider points at.
async fn server(extra: &str) -> TestServer {
    TestServer::builder()
        .listed(LISTED)
        .mock("other", MockOptions::default())
        .extra(extra)
        .start()
        .await
}

fn chat_requests(mock: &MockUpstream) -> Vec<Value> {
    mock.requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .map(|r| r.json().expect("JSON request"))
        .collect()
}

async fn create_llm(server: &TestServer, body: Value) -> Value {
    let (status, llm) = send(server, "POST", "/v1/llms", Some(body.clone())).await;
    assert_eq!(status, 201, "create {body}: {llm}");
    llm
}

/// Asserts a 422 naming `baseUrl` whose detail contains `needle`.
fn assert_base_url_refused(status: u16, problem: &Value, url: &str, needle: &str) {
    assert_eq!(status, 422, "{url}: {problem}");
    assert_eq!(problem["field"], "baseUrl", "{url}: {problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.starts_with("baseUrl: "), "{url}: {detail}");
    assert!(
        detail.contains(needle),
        "{url}: {detail:?} lacks {needle:?}"
    );
}

/// Polls the turn until it is neither running nor queued; returns it.
async fn settle(server: &TestServer, conv: &str, turn_id: &str) -> Value {
    eventually(
        LIMIT,
        &format!("turn {turn_id} not running"),
        || async move {
            let turns = get(server, &format!("/v1/conversations/{conv}/turns")).await;
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
    .await
}

const METADATA: &str = "169.254.169.254 is a link-local / cloud metadata address";

/// The metadata address as the URL standard lets one write it.
const METADATA_URLS: &[&str] = &[
    "http://169.254.169.254/latest/meta-data",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://0xA9FEA9FE/v1",
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://169.254.43518/",
    "http://169.16689662/",
    "http://169.254.169.254.:80/",
    "http://%31%36%39.254.169.254/",
    "HTTPS://169.254.169.254/v1",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/v1",
];

#[tokio::test]
async fn metadata_addresses_in_every_spelling_are_422() {
    // Even an allowlist of everything never reaches metadata addresses.
    let open = server(&security(r#""0.0.0.0/0", "::/0""#)).await;
    let closed = server("").await;
    for url in METADATA_URLS {
        let body = json!({"model": "mock/echo", "baseUrl": url});
        let (status, problem) = send(&open, "POST", "/v1/llms", Some(body.clone())).await;
        assert_base_url_refused(status, &problem, url, METADATA);
        // Custom base URLs off: not a configured provider's, whatever it says.
        let (status, problem) = send(&closed, "POST", "/v1/llms", Some(body)).await;
        assert_base_url_refused(
            status,
            &problem,
            url,
            "not the base URL of a configured provider",
        );
    }
    for (url, needle) in [
        (
            "http://100.100.100.200/",
            "100.100.100.200 is a cloud metadata address",
        ),
        (
            "http://[fd00:ec2::254]/",
            "fd00:ec2::254 is a cloud metadata address",
        ),
        (
            "http://[fe80::1]:8080/",
            "fe80::1 is a link-local / cloud metadata address",
        ),
        ("http://0/", "0.0.0.0 is an unspecified"),
        ("http://0.0.0.0:8080/v1", "0.0.0.0 is an unspecified"),
        (
            "http://evil@169.254.169.254/",
            "must not contain credentials (user@host); the host would be 169.254.169.254",
        ),
        (
            "http://169.254.169.254@good.example/",
            "the host would be good.example",
        ),
        ("ftp://127.0.0.1/", "scheme \"ftp\" is not allowed"),
        ("file:///etc/passwd", "scheme \"file\" is not allowed"),
        ("http://127.0.0.1/v1?key=x", "query"),
        ("http://999.1.1.1/", "not a valid URL"),
    ] {
        let (status, problem) = send(
            &open,
            "POST",
            "/v1/llms",
            Some(json!({"model": "mock/echo", "baseUrl": url})),
        )
        .await;
        assert_base_url_refused(status, &problem, url, needle);
    }
    // Nothing was created; nothing reached either mock's chat endpoint.
    let list = get(&open, "/v1/llms").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "{list}");
    assert!(chat_requests(&open.mock).is_empty());
}

#[tokio::test]
async fn allowlisted_custom_base_url_serves_turns_end_to_end() {
    let server = server(&security(r#""127.0.0.0/8""#)).await;
    let other = server.named("other").base_url();

    // Outside the allowlist: 422 naming the address; PATCH checks it too.
    let (status, problem) = send(
        &server,
        "POST",
        "/v1/llms",
        Some(json!({"model": "mock/echo", "baseUrl": "http://10.0.0.1:8080/v1"})),
    )
    .await;
    assert_base_url_refused(
        status,
        &problem,
        "10.0.0.1",
        "10.0.0.1 is not in security.base_url_allowlist",
    );

    let llm = create_llm(
        &server,
        json!({"model": "mock/echo", "baseUrl": format!("{other}/v1/")}),
    )
    .await;
    assert_eq!(llm["baseUrl"], format!("{other}/v1"), "normalized: {llm}");
    let llm_id = llm["id"].as_str().unwrap().to_owned();
    let (status, problem) = send(
        &server,
        "PATCH",
        &format!("/v1/llms/{llm_id}"),
        Some(json!({"baseUrl": "http://0xa9fea9fe/"})),
    )
    .await;
    assert_base_url_refused(status, &problem, "patch", METADATA);

    let conv = create(&server, json!({"llmId": llm_id})).await;
    let started = start_turn(&server, &conv, json!({"content": "hello custom"})).await;
    let turn = settle(&server, &conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    // The model id stays the config's; the request went to the custom URL only.
    assert_eq!(turn["modelId"], "mock/echo");
    assert_eq!(turn["llmId"], llm_id.as_str());
    let sent = chat_requests(server.named("other"));
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert_eq!(sent[0]["model"], "echo");
    assert!(chat_requests(&server.mock).is_empty());
    let custom = server
        .named("other")
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(custom.header("authorization"), None, "no credentials");
    let calls = server.wait_calls(1).await;
    assert_eq!(calls[0]["provider"], "custom", "{:#?}", calls[0]);
    assert_eq!(calls[0]["modelId"], "mock/echo");
    assert_eq!(calls[0]["upstreamModel"], "echo");
    let messages = get(&server, &format!("/v1/conversations/{conv}/messages")).await;
    assert_eq!(
        messages["data"][1]["content"], "echo: hello custom",
        "{messages}"
    );
}

#[tokio::test]
async fn custom_base_url_for_advisor_and_tool_results() {
    let server = server(&security(r#""127.0.0.0/8""#)).await;
    let other = server.named("other").base_url();

    // The advisor's config points at the custom URL; the chat model does not.
    let advisor = create_llm(&server, json!({"model": "mock/echo", "baseUrl": other})).await;
    let conv = create(
        &server,
        json!({"advisor": true, "llmOverrides": {"advisor": advisor["id"]}}),
    )
    .await;
    let started = start_turn(
        &server,
        &conv,
        json!({"content": "should I?", "model": "mock/tool-call:advisor"}),
    )
    .await;
    let turn = settle(&server, &conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let to_other = chat_requests(server.named("other"));
    assert_eq!(to_other.len(), 1, "the advisor call: {to_other:#?}");
    assert_eq!(to_other[0]["model"], "echo");
    let to_mock = chat_requests(&server.mock);
    assert_eq!(to_mock.len(), 2, "two chat steps: {to_mock:#?}");

    // Client tools: the first run and the resumed one both go to the custom URL.
    let chat = create_llm(
        &server,
        json!({"model": "mock/tool-call:get_weather", "baseUrl": other}),
    )
    .await;
    let conv = create(&server, json!({"llmId": chat["id"]})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"question": {"type": "string"}}}}}]);
    let started = start_turn(
        &server,
        &conv,
        json!({"content": "Weather?", "tools": tools}),
    )
    .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let turn = settle(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "requires_action", "{turn}");
    let to_other = chat_requests(server.named("other"));
    assert_eq!(to_other.len(), 2, "{to_other:#?}");
    assert_eq!(to_other[1]["model"], "tool-call:get_weather");
    let messages = get(&server, &format!("/v1/conversations/{conv}/messages")).await;
    let call_id = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["parts"].as_array().cloned().unwrap_or_default())
        .find(|p| p["type"] == "toolCall")
        .and_then(|p| p["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("a tool call: {messages}"));
    let (status, body) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns/{turn_id}/tool-results"),
        Some(json!({"results": [{"toolCallId": call_id, "content": "sunny"}]})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let turn = settle(&server, &conv, &turn_id).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let to_other = chat_requests(server.named("other"));
    assert_eq!(to_other.len(), 3, "the resumed run: {to_other:#?}");
    assert_eq!(chat_requests(&server.mock).len(), 2, "nothing more to mock");
}

#[tokio::test]
async fn stored_custom_base_url_is_refused_once_custom_urls_are_off() {
    let server = server(&security(r#""127.0.0.0/8""#)).await;
    let other = server.named("other").base_url();
    let llm = create_llm(&server, json!({"model": "mock/echo", "baseUrl": other})).await;
    let conv = create(&server, json!({"llmId": llm["id"]})).await;
    let dir = server.shutdown().await;

    let server = TestServer::builder().listed(LISTED).dir(dir).start().await;
    let (status, problem) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(json!({"content": "hi"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("allow_custom_base_urls = false") && detail.contains(&other),
        "{detail}"
    );
    assert!(chat_requests(&server.mock).is_empty(), "not sent anywhere");
}

/// A tiny server on 127.0.0.1 that answers every request with a redirect
/// to the metadata address; returns its base URL and a hit counter.
async fn redirector() -> (String, Arc<AtomicUsize>) {
    use axum::http::{header, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        let counter = Arc::clone(&counter);
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            (
                StatusCode::FOUND,
                [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                "moved",
            )
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn redirect_to_a_private_address_is_not_followed() {
    let (url, hits) = redirector().await;

    // Upstream level: the 302 is the answer.
    let policy = Arc::new(AddressPolicy::new(&["127.0.0.0/8"]).unwrap());
    let client = ProviderClient::guarded(
        "custom",
        Url::parse(&url).unwrap(),
        Timeouts::default(),
        GuardedResolver::new(policy),
    )
    .unwrap();
    let response = client
        .chat_completions(Bytes::from_static(br#"{"model":"m","messages":[]}"#), false)
        .await
        .expect("the redirector answers");
    assert_eq!(response.status(), 302);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Server level: the turn fails with the status, nothing else is contacted.
    let server = server(&security(r#""127.0.0.0/8""#)).await;
    let llm = create_llm(&server, json!({"model": "mock/echo", "baseUrl": url})).await;
    let conv = create(&server, json!({"llmId": llm["id"]})).await;
    let started = start_turn(&server, &conv, json!({"content": "hi"})).await;
    let turn = settle(&server, &conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["status"], "failed", "{turn}");
    let error = turn["error"].as_str().unwrap();
    assert!(
        error.contains("provider 'custom' answered HTTP 302"),
        "{error}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one request, not followed");
}

/// Maps host names to fixed addresses.
struct FakeLookup(HashMap<&'static str, Vec<IpAddr>>);

impl Lookup for FakeLookup {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            self.0
                .get(host)
                .cloned()
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "unknown test host"))
        })
    }
}

fn fake_resolver() -> GuardedResolver {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut names = HashMap::new();
    names.insert("metadata.test", vec![ip("169.254.169.254")]);
    names.insert("mapped.test", vec![ip("::ffff:169.254.169.254")]);
    names.insert("private.test", vec![ip("10.0.0.1")]);
    names.insert("ok.test", vec![ip("127.0.0.1")]);
    names.insert("mixed.test", vec![ip("169.254.169.254"), ip("127.0.0.1")]);
    let policy = Arc::new(AddressPolicy::new(&["127.0.0.0/8"]).unwrap());
    GuardedResolver::with_lookup(policy, Arc::new(FakeLookup(names)))
}

#[tokio::test]
async fn names_resolving_to_refused_addresses_never_connect() {
    let mock = MockUpstream::start().await;
    let port = mock.addr().port();
    let timeouts = Timeouts {
        connect_ms: 2_000,
        total_ms: 10_000,
        ..Timeouts::default()
    };
    let body =
        Bytes::from_static(br#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#);

    for host in ["ok.test", "mixed.test"] {
        let client = ProviderClient::guarded(
            "custom",
            Url::parse(&format!("http://{host}:{port}/v1")).unwrap(),
            timeouts,
            fake_resolver(),
        )
        .unwrap();
        let response = client
            .chat_completions(body.clone(), false)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(response.status(), 200, "{host}");
        let answer = response.bytes(1 << 20).await.unwrap();
        assert!(String::from_utf8_lossy(&answer).contains("echo: hi"));
    }
    assert_eq!(mock.requests().len(), 2);

    for (host, needle) in [
        (
            "metadata.test",
            "metadata.test resolves only to refused addresses: 169.254.169.254 (a link-local / \
             cloud metadata address)",
        ),
        (
            "mapped.test",
            "mapped.test resolves only to refused addresses: 169.254.169.254 (a link-local",
        ),
        (
            "private.test",
            "private.test resolves only to refused addresses: 10.0.0.1 (not in \
             security.base_url_allowlist)",
        ),
    ] {
        let client = ProviderClient::guarded(
            "custom",
            Url::parse(&format!("http://{host}:{port}/v1")).unwrap(),
            timeouts,
            fake_resolver(),
        )
        .unwrap();
        let err = client
            .chat_completions(body.clone(), false)
            .await
            .expect_err(host);
        assert!(
            matches!(err, UpstreamError::Unreachable { .. }),
            "{host}: {err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(needle), "{host}: {message}");
    }

    // The same through a plain reqwest client with the resolver.
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(fake_resolver()))
        .build()
        .unwrap();
    let ok = http
        .get(format!("http://ok.test:{port}/v1/models"))
        .send()
        .await
        .expect("ok.test connects");
    assert_eq!(ok.status(), 200);
    let err = http
        .get(format!("http://metadata.test:{port}/v1/models"))
        .send()
        .await
        .expect_err("metadata.test is refused");
    let mut chain = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    assert!(
        chain.contains("metadata.test resolves only to refused addresses: 169.254.169.254"),
        "{chain}"
    );
    // Only the allowed connections reached the mock.
    assert_eq!(mock.requests().len(), 3);
}

#[tokio::test]
async fn custom_base_url_for_title_and_compaction() {
    let server = server(&security(r#""127.0.0.0/8""#)).await;
    let other = server.named("other").base_url();
    let llm = create_llm(&server, json!({"model": "mock/echo", "baseUrl": other})).await;
    let conv = create(
        &server,
        json!({"llmOverrides": {"title": llm["id"], "compaction": llm["id"]}}),
    )
    .await;
    let started = start_turn(
        &server,
        &conv,
        json!({"content": "hello", "model": "mock/echo"}),
    )
    .await;
    let turn = settle(&server, &conv, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    assert_eq!(
        chat_requests(&server.mock).len(),
        1,
        "the turn went to the provider"
    );

    let (status, titled) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/title"),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 200, "{titled}");
    let (status, compacted) = send(
        &server,
        "POST",
        &format!("/v1/conversations/{conv}/compact"),
        Some(json!({"keepLast": 0})),
    )
    .await;
    assert_eq!(status, 200, "{compacted}");

    // Both went to the custom URL, without credentials; none to the provider.
    assert_eq!(chat_requests(&server.mock).len(), 1);
    let to_other: Vec<_> = server
        .named("other")
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .collect();
    assert_eq!(to_other.len(), 2, "{to_other:#?}");
    for request in &to_other {
        assert_eq!(request.header("authorization"), None, "no credentials");
        assert_eq!(request.json().unwrap()["model"], "echo");
    }
}
