//! Tests for the mock upstream, using raw HTTP/1.1 over `tokio::net::TcpStream`.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions, MockUpstream};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The body was complete (for chunked: the terminating zero-size chunk was seen).
    complete: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    /// The `data:` payloads of an SSE body.
    fn sse_data(&self) -> Vec<String> {
        let text = self.text();
        assert!(
            text.is_empty() || text.ends_with("\n\n"),
            "events end with a blank line: {text:?}"
        );
        text.split_terminator("\n\n")
            .map(|ev| {
                ev.strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("event is `data: ...`: {ev:?}"))
                    .to_owned()
            })
            .collect()
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    close: bool,
) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let conn = if close { "Connection: close\r\n" } else { "" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{conn}Content-Type: application/json\r\nX-Test: yes\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads until EOF (or a connection error, e.g. a reset) and parses the response.
async fn read_response(mut s: TcpStream) -> Resp {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = std::str::from_utf8(&raw[..head_end]).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    let rest = &raw[head_end + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if !chunked {
        let complete = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .is_none_or(|(_, v)| v.parse::<usize>().unwrap() == rest.len());
        return Resp {
            status,
            headers,
            body: rest.to_vec(),
            complete,
        };
    }
    // De-chunk leniently: a truncated body keeps what arrived.
    let mut body = Vec::new();
    let mut pos = 0;
    let mut complete = false;
    while let Some(eol) = rest[pos..].windows(2).position(|w| w == b"\r\n") {
        let size_line = std::str::from_utf8(&rest[pos..pos + eol]).unwrap();
        let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
        pos += eol + 2;
        if size == 0 {
            complete = true;
            break;
        }
        let end = (pos + size).min(rest.len());
        body.extend_from_slice(&rest[pos..end]);
        pos = end + 2;
        if pos > rest.len() {
            break;
        }
    }
    Resp {
        status,
        headers,
        body,
        complete,
    }
}

async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Resp {
    read_response(send(addr, method, path, body, true).await).await
}

fn chat_body(model: &str, stream: bool, include_usage: bool) -> String {
    let mut body = json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there world"},
        ],
    });
    if stream {
        body["stream"] = json!(true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body.to_string()
}

async fn chat(mock: &MockUpstream, model: &str, stream: bool, include_usage: bool) -> Resp {
    let body = chat_body(model, stream, include_usage);
    request(mock.addr(), "POST", "/v1/chat/completions", Some(&body)).await
}

#[tokio::test]
async fn normal_completion_shape() {
    let mock = MockUpstream::start().await;
    assert_eq!(mock.base_url(), format!("http://{}", mock.addr()));
    let r = chat(&mock, "mock-model", false, false).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["id"], "chatcmpl-mock");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["created"], 1_700_000_000u64);
    assert_eq!(v["model"], "mock-upstream-model");
    assert_eq!(v["system_fingerprint"], "fp_mock");
    assert_eq!(v["x_mock_extra"], json!({"kept": true}));
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": "echo: hello there world"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({
            "prompt_tokens": 5,
            "completion_tokens": 4,
            "total_tokens": 9,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        })
    );

    let r = request(mock.addr(), "POST", "/v1/chat/completions", Some("{nope")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let r = request(mock.addr(), "GET", "/health", None).await;
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
    let r = request(mock.addr(), "GET", "/v1/models", None).await;
    let models = r.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock-model");
    assert_eq!(models["data"][0]["meta"]["n_ctx"], 4096);
    assert_eq!(models["data"][0]["owned_by"], "llamacpp");
    assert_eq!(models["data"].as_array().unwrap().len(), 13);
    let r = request(mock.addr(), "GET", "/props", None).await;
    assert_eq!(r.json()["default_generation_settings"]["n_ctx"], 4096);
}

#[tokio::test]
async fn stream_with_and_without_usage() {
    let mock = MockUpstream::start().await;

    let r = chat(&mock, "echo", true, false).await;
    assert_eq!(r.status, 200);
    assert!(r.complete);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let data = r.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // role + 4 words + finish
    assert_eq!(chunks.len(), 6);
    assert!(chunks
        .iter()
        .all(|c| c["x_mock_extra"] == json!({"kept": true})));
    assert!(chunks.iter().all(|c| c["model"] == "mock-upstream-model"));
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..5]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, "echo: hello there world");
    assert_eq!(chunks[5]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[5]["choices"][0]["finish_reason"], "stop");

    let r = chat(&mock, "echo", true, true).await;
    let data = r.sse_data();
    assert_eq!(data.len(), 8);
    assert_eq!(data[7], "[DONE]");
    let usage: Value = serde_json::from_str(&data[6]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["object"], "chat.completion.chunk");
    assert_eq!(usage["usage"]["prompt_tokens"], 5);
    assert_eq!(usage["usage"]["completion_tokens"], 4);
    assert_eq!(usage["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn drop_ends_without_done() {
    let mock = MockUpstream::start().await;
    let r = chat(&mock, "drop", true, false).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "chunked body must be cut short");
    let text = r.text();
    assert!(text.contains(r#""role":"assistant""#), "{text}");
    assert!(text.contains(r#""content":"echo: ""#), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");

    let r = chat(&mock, "drop", false, false).await;
    assert_eq!(r.status, 200);
    assert!(!r.complete);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn other_stream_behaviours() {
    let mock = MockUpstream::start().await;
    let data = chat(&mock, "malformed", true, false).await.sse_data();
    assert_eq!(data.len(), 3);
    assert_eq!(data[1], "{this is not json");
    assert_eq!(data[2], "[DONE]");

    let data = chat(&mock, "inband-error", true, false).await.sse_data();
    assert_eq!(data.len(), 3);
    let err: Value = serde_json::from_str(&data[2]).unwrap();
    assert_eq!(err["error"]["code"], 500);

    let data = chat(&mock, "tools", true, true).await.sse_data();
    let args: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, r#"{"city": "Paris"}"#);
    assert_eq!(data.last().unwrap(), "[DONE]");

    let v = chat(&mock, "reasoning", false, false).await.json();
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        "thinking..."
    );
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        2
    );
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn status_429() {
    let mock = MockUpstream::start().await;
    let r = chat(&mock, "status:429", false, false).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"error": {"message": "mock upstream status 429", "type": "mock_error", "param": null, "code": 429}})
    );
    let r = chat(&mock, "status:503", true, false).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), None);
}

#[tokio::test]
async fn records_requests() {
    let mock = MockUpstream::start().await;
    assert!(mock.last_request().is_none());
    request(mock.addr(), "GET", "/health", None).await;
    let body = chat_body("mock-model", false, false);
    chat(&mock, "mock-model", false, false).await;

    let reqs = mock.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        ("GET", "/health")
    );
    let last = mock.last_request().unwrap();
    assert_eq!(last, reqs[1]);
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/v1/chat/completions");
    assert_eq!(last.body, body.as_bytes());
    assert_eq!(last.header("x-test"), Some("yes"));
    assert_eq!(last.json().unwrap()["model"], "mock-model");

    mock.set_record_requests(false);
    request(mock.addr(), "GET", "/health", None).await;
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test]
async fn cancelled_stream_is_counted() {
    let mock = MockUpstream::start().await;
    let body = chat_body("slow:200", true, false);
    let mut s = send(
        mock.addr(),
        "POST",
        "/v1/chat/completions",
        Some(&body),
        true,
    )
    .await;
    // Read until the role chunk arrived, then hang up mid-stream.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(r#""role":"assistant""#) {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(mock.in_flight(), 1);
    drop(s);

    assert!(mock.wait_cancelled(1, Duration::from_secs(5)).await);
    assert_eq!(mock.cancelled_streams(), 1);
    assert_eq!(mock.in_flight(), 0);
    assert_eq!(mock.cancelled_requests(), 0);
}

#[tokio::test]
async fn cancelled_request_is_counted() {
    let mock = MockUpstream::start().await;
    let body = chat_body("hang", false, false);
    let s = send(
        mock.addr(),
        "POST",
        "/v1/chat/completions",
        Some(&body),
        false,
    )
    .await;
    // Wait until the mock is serving it, then hang up.
    eventually(Duration::from_secs(5), "the mock is serving it", || {
        std::future::ready(mock.in_flight() > 0)
    })
    .await;
    drop(s);
    assert!(
        mock.wait_cancelled_requests(1, Duration::from_secs(5))
            .await
    );
    assert_eq!(mock.in_flight(), 0);
    assert!(!mock.wait_cancelled(1, Duration::from_millis(10)).await);
}

#[tokio::test]
async fn delays_are_applied() {
    let mock = MockUpstream::start().await;
    let t = std::time::Instant::now();
    let r = chat(&mock, "slow-first:100", false, false).await;
    assert_eq!(r.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(100));

    let t = std::time::Instant::now();
    let data = chat(&mock, "stall:150", true, false).await.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(t.elapsed() >= Duration::from_millis(150));

    // slow stream: 20ms between each of the 7 events.
    let t = std::time::Instant::now();
    let data = chat(&mock, "slow:20", true, false).await.sse_data();
    assert_eq!(data.len(), 7);
    assert!(t.elapsed() >= Duration::from_millis(120));
    assert_eq!(
        (mock.cancelled_streams(), mock.cancelled_requests()),
        (0, 0)
    );
}

// ---------------------------------------------------------------------------------------------
// Flavours

/// `qwen3-8b` (8192, loaded), `meta-llama/Llama-3-8B` (no context window, loaded),
/// `gemma:2b` (2048, not loaded).
fn three_models() -> Vec<MockModel> {
    vec![
        MockModel::new("qwen3-8b", Some(8192)),
        MockModel::new("meta-llama/Llama-3-8B", None),
        MockModel::new("gemma:2b", Some(2048)).with_loaded(false),
    ]
}

async fn start(flavour: Flavour) -> MockUpstream {
    let mock = MockUpstream::start_with(MockOptions::new(flavour, three_models())).await;
    assert_eq!(mock.flavour(), flavour);
    mock
}

async fn get(mock: &MockUpstream, path: &str) -> Resp {
    request(mock.addr(), "GET", path, None).await
}

/// `(status, body as JSON)`.
async fn get_json(mock: &MockUpstream, path: &str) -> (u16, Value) {
    let r = get(mock, path).await;
    assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    (r.status, r.json())
}

fn ids(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn default_options_match_start() {
    let options = MockOptions::default();
    assert_eq!(options.flavour, Flavour::LlamaCpp);
    assert_eq!(options.models.len(), modelyard_testkit::MODEL_IDS.len());
    assert!(options
        .models
        .iter()
        .all(|m| m.loaded && m.context_window == Some(4096)));
    let mock = MockUpstream::start().await;
    assert_eq!(mock.flavour(), Flavour::LlamaCpp);
    assert_eq!(mock.models(), options.models);
}

#[tokio::test]
async fn llamacpp_discovery() {
    let mock = start(Flavour::LlamaCpp).await;
    assert_eq!(
        get_json(&mock, "/health").await,
        (200, json!({"status": "ok"}))
    );
    let (status, v) = get_json(&mock, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0],
        json!({"id": "qwen3-8b", "object": "model", "created": 1_700_000_000u64, "owned_by": "llamacpp",
               "meta": {"n_ctx": 8192, "n_ctx_train": 8192}})
    );
    assert_eq!(v["data"][1]["id"], "meta-llama/Llama-3-8B");
    assert!(v["data"][1].get("meta").is_none(), "{v}");
    assert_eq!(ids(&v["data"]).len(), 3);
    let (status, v) = get_json(&mock, "/props").await;
    assert_eq!(status, 200);
    assert_eq!(v["default_generation_settings"]["n_ctx"], 8192);
    assert_eq!(v["total_slots"], 1);
    assert_eq!(v["model_alias"], "qwen3-8b");
    // Other flavours' routes are not served.
    for path in ["/running", "/api/tags", "/"] {
        assert_eq!(get(&mock, path).await.status, 404, "{path}");
    }

    // No model: /props answers like llama.cpp while loading.
    mock.set_models(Vec::new());
    let (status, v) = get_json(&mock, "/props").await;
    assert_eq!(status, 503);
    assert_eq!(v["error"]["message"], "Loading model");
    assert_eq!(get_json(&mock, "/v1/models").await.1["data"], json!([]));
}

#[tokio::test]
async fn openai_discovery() {
    let mock = start(Flavour::OpenAi).await;
    let (status, v) = get_json(&mock, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"object": "list", "data": [
            {"id": "qwen3-8b", "object": "model", "created": 1_700_000_000u64, "owned_by": "openai"},
            {"id": "meta-llama/Llama-3-8B", "object": "model", "created": 1_700_000_000u64, "owned_by": "openai"},
            {"id": "gemma:2b", "object": "model", "created": 1_700_000_000u64, "owned_by": "openai"},
        ]})
    );
    for path in ["/health", "/props", "/api/tags", "/running"] {
        assert_eq!(get(&mock, path).await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn llama_swap_discovery() {
    let mock = start(Flavour::LlamaSwap).await;
    let (status, v) = get_json(&mock, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(
        ids(&v["data"]),
        ["qwen3-8b", "meta-llama/Llama-3-8B", "gemma:2b"]
    );
    assert!(v["data"].as_array().unwrap().iter().all(|m| m
        == &json!({"id": m["id"], "object": "model", "created": 1_700_000_000u64, "owned_by": "llama-swap"})));

    assert_eq!(
        get_json(&mock, "/running").await,
        (
            200,
            json!({"running": [
                {"model": "qwen3-8b", "state": "ready", "ttl": 300},
                {"model": "meta-llama/Llama-3-8B", "state": "ready", "ttl": 300},
            ]})
        )
    );

    let (status, v) = get_json(&mock, "/upstream/qwen3-8b/props").await;
    assert_eq!(status, 200);
    assert_eq!(v["default_generation_settings"]["n_ctx"], 8192);
    assert_eq!(v["model_alias"], "qwen3-8b");
    // An id with `/`; its context window is unknown.
    let (status, v) = get_json(&mock, "/upstream/meta-llama/Llama-3-8B/props").await;
    assert_eq!(status, 200);
    assert_eq!(v["model_alias"], "meta-llama/Llama-3-8B");
    assert_eq!(v["default_generation_settings"], json!({}));
    // Percent-encoded ids are decoded.
    let (status, v) = get_json(&mock, "/upstream/meta-llama%2FLlama-3-8B/props").await;
    assert_eq!(
        (status, &v["model_alias"]),
        (200, &json!("meta-llama/Llama-3-8B"))
    );
    // Not loaded (the mock never starts it) and unknown: 404.
    assert_eq!(get(&mock, "/upstream/gemma:2b/props").await.status, 404);
    assert_eq!(get(&mock, "/upstream/nope/props").await.status, 404);
    assert_eq!(get(&mock, "/upstream/props").await.status, 404);

    let r = get(&mock, "/health").await;
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    assert_eq!(get(&mock, "/props").await.status, 404);

    // Loading gemma makes it run.
    let mut models = three_models();
    models[2].loaded = true;
    mock.set_models(models);
    let (status, v) = get_json(&mock, "/upstream/gemma:2b/props").await;
    assert_eq!(
        (status, &v["default_generation_settings"]["n_ctx"]),
        (200, &json!(2048))
    );
    assert_eq!(
        get_json(&mock, "/running").await.1["running"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[tokio::test]
async fn vllm_discovery() {
    let mock = start(Flavour::Vllm).await;
    let (status, v) = get_json(&mock, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    let m = &v["data"][0];
    assert_eq!(
        (
            &m["id"],
            &m["object"],
            &m["owned_by"],
            &m["root"],
            &m["max_model_len"]
        ),
        (
            &json!("qwen3-8b"),
            &json!("model"),
            &json!("vllm"),
            &json!("qwen3-8b"),
            &json!(8192)
        )
    );
    assert_eq!(v["data"][1]["root"], "meta-llama/Llama-3-8B");
    assert!(v["data"][1].get("max_model_len").is_none(), "{v}");
    assert_eq!(v["data"][2]["max_model_len"], 2048);

    let r = get(&mock, "/health").await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    assert_eq!(get(&mock, "/props").await.status, 404);
}

#[tokio::test]
async fn ollama_discovery() {
    let mock = start(Flavour::Ollama).await;
    let r = get(&mock, "/").await;
    assert_eq!((r.status, r.text()), (200, "Ollama is running".to_owned()));

    let (status, v) = get_json(&mock, "/api/tags").await;
    assert_eq!(status, 200);
    let tags = v["models"].as_array().unwrap();
    assert_eq!(tags.len(), 3);
    assert_eq!(tags[0]["name"], "qwen3-8b");
    assert_eq!(tags[0]["model"], "qwen3-8b");
    assert_eq!(tags[0]["modified_at"], "2026-01-01T00:00:00Z");
    assert_eq!(tags[0]["size"], 1);
    assert_eq!(tags[0]["digest"], "x");
    assert_eq!(tags[0]["details"]["family"], "llama");
    assert_eq!(tags[0]["details"]["parameter_size"], "8B");
    assert_eq!(tags[2]["name"], "gemma:2b");

    let show = |body: &'static str| request(mock.addr(), "POST", "/api/show", Some(body));
    let r = show(r#"{"model":"qwen3-8b"}"#).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["model_info"],
        json!({"general.architecture": "llama", "llama.context_length": 8192})
    );
    assert_eq!(v["details"]["family"], "llama");
    assert_eq!(v["parameters"], "");
    assert_eq!(v["capabilities"], json!(["completion"]));
    // `name` works too, and shows models that are not loaded.
    let v = show(r#"{"name":"gemma:2b"}"#).await.json();
    assert_eq!(v["model_info"]["llama.context_length"], 2048);
    let v = show(r#"{"model":"meta-llama/Llama-3-8B"}"#).await.json();
    assert_eq!(v["model_info"], json!({"general.architecture": "llama"}));
    let r = show(r#"{"model":"nope"}"#).await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "model 'nope' not found"}))
    );
    assert_eq!(show(r#"{}"#).await.status, 400);
    assert_eq!(show("{nope").await.status, 400);
    assert_eq!(get(&mock, "/api/show").await.status, 404);

    let (status, v) = get_json(&mock, "/api/ps").await;
    assert_eq!(status, 200);
    let ps = v["models"].as_array().unwrap();
    assert_eq!(ps.len(), 2, "{v}");
    assert_eq!(
        (
            &ps[0]["name"],
            &ps[0]["model"],
            &ps[0]["size"],
            &ps[0]["expires_at"],
            &ps[0]["context_length"]
        ),
        (
            &json!("qwen3-8b"),
            &json!("qwen3-8b"),
            &json!(1),
            &json!("2026-01-01T00:00:00Z"),
            &json!(8192)
        )
    );
    assert_eq!(ps[1]["name"], "meta-llama/Llama-3-8B");
    assert!(ps[1].get("context_length").is_none());

    let (status, v) = get_json(&mock, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(
        ids(&v["data"]),
        ["qwen3-8b", "meta-llama/Llama-3-8B", "gemma:2b"]
    );
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(get(&mock, "/health").await.status, 404);

    // `x` finds `x:latest`.
    mock.set_models(vec![MockModel::new("llama3:latest", Some(4096))]);
    let v = show(r#"{"model":"llama3"}"#).await.json();
    assert_eq!(v["model_info"]["llama.context_length"], 4096);
}

#[tokio::test]
async fn openrouter_discovery() {
    let mock = start(Flavour::OpenRouter).await;
    let expected = json!({"data": [
        {"id": "qwen3-8b", "name": "Display qwen3-8b", "context_length": 8192, "created": 1_700_000_000u64},
        {"id": "meta-llama/Llama-3-8B", "name": "Display meta-llama/Llama-3-8B", "context_length": null, "created": 1_700_000_000u64},
        {"id": "gemma:2b", "name": "Display gemma:2b", "context_length": 2048, "created": 1_700_000_000u64},
    ]});
    assert_eq!(get_json(&mock, "/v1/models").await, (200, expected.clone()));
    assert_eq!(get_json(&mock, "/api/v1/models").await, (200, expected));
    let body = chat_body("meta-llama/Llama-3-8B", false, false);
    let r = request(mock.addr(), "POST", "/api/v1/chat/completions", Some(&body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "echo: hello there world"
    );
    assert_eq!(get(&mock, "/health").await.status, 404);
}

#[tokio::test]
async fn chat_is_the_same_for_every_flavour() {
    for flavour in Flavour::ALL {
        let mock = start(flavour).await;
        for model in ["qwen3-8b", "meta-llama/Llama-3-8B", "gemma:2b"] {
            let r = chat(&mock, model, false, false).await;
            assert_eq!(r.status, 200, "{flavour:?} {model}");
            let v = r.json();
            assert_eq!(
                v["choices"][0]["message"]["content"],
                "echo: hello there world"
            );
            assert_eq!(v["model"], "mock-upstream-model");
            let data = chat(&mock, model, true, true).await.sse_data();
            assert_eq!(data.len(), 8, "{flavour:?} {model}");
            assert_eq!(data[7], "[DONE]");
        }
        assert_eq!(chat(&mock, "status:429", false, false).await.status, 429);
        if flavour != Flavour::OpenRouter {
            let body = chat_body("echo", false, false);
            let r = request(mock.addr(), "POST", "/api/v1/chat/completions", Some(&body)).await;
            assert_eq!(r.status, 404, "{flavour:?}");
        }
    }
}

#[tokio::test]
async fn set_down_answers_503_everywhere() {
    for flavour in Flavour::ALL {
        let mock = start(flavour).await;
        mock.set_down(true);
        let paths = [
            "/v1/models",
            "/health",
            "/props",
            "/running",
            "/api/tags",
            "/api/ps",
            "/",
            "/nope",
        ];
        for path in paths {
            let (status, v) = get_json(&mock, path).await;
            assert_eq!(status, 503, "{flavour:?} {path}");
            assert_eq!(v["error"]["message"], "mock upstream is down");
            assert_eq!(v["error"]["code"], 503);
        }
        let r = chat(&mock, "echo", true, false).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.json()["error"]["message"], "mock upstream is down");
        let show = request(
            mock.addr(),
            "POST",
            "/api/show",
            Some(r#"{"model":"qwen3-8b"}"#),
        )
        .await;
        assert_eq!(show.status, 503);
        // Requests are still recorded.
        assert_eq!(mock.requests().len(), paths.len() + 2);

        mock.set_down(false);
        assert_eq!(chat(&mock, "echo", false, false).await.status, 200);
        let models = if flavour == Flavour::Ollama {
            "/api/tags"
        } else {
            "/v1/models"
        };
        assert_eq!(get(&mock, models).await.status, 200, "{flavour:?}");
    }
}

#[tokio::test]
async fn anthropic_discovery_is_paged_and_messages_are_served_in_anthropic_shapes() {
    let mock = start(Flavour::Anthropic).await;
    // Pages of two, linked by `after_id`.
    let (status, first) = get_json(&mock, "/v1/models?limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&first["data"]), ["qwen3-8b", "meta-llama/Llama-3-8B"]);
    assert_eq!(first["has_more"], true);
    assert_eq!(first["last_id"], "meta-llama/Llama-3-8B");
    assert_eq!(first["data"][0]["display_name"], "Display qwen3-8b");
    let (_, second) = get_json(&mock, "/v1/models?after_id=meta-llama%2FLlama-3-8B").await;
    assert_eq!(ids(&second["data"]), ["gemma:2b"]);
    assert_eq!(second["has_more"], false);
    assert_eq!(get(&mock, "/v1/models?after_id=nope").await.status, 400);

    let body = r#"{"model":"claude-x","max_tokens":9,"system":"Be brief.",
        "messages":[{"role":"user","content":[{"type":"text","text":"hello there world"}]}]}"#;
    let r = request(mock.addr(), "POST", "/v1/messages", Some(body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": "claude-x",
               "content": [{"type": "text", "text": "echo: hello there world"}],
               "stop_reason": "end_turn", "stop_sequence": null,
               "usage": {"input_tokens": 5, "cache_creation_input_tokens": 1,
                         "cache_read_input_tokens": 3, "output_tokens": 4}})
    );
    let streamed = body.replace("\"max_tokens\":9", "\"max_tokens\":9,\"stream\":true");
    let r = request(mock.addr(), "POST", "/v1/messages", Some(&streamed)).await;
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8(r.body.clone()).unwrap();
    let names: Vec<&str> = text
        .split_terminator("\n\n")
        .map(|e| e.lines().next().unwrap().strip_prefix("event: ").unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let r = request(mock.addr(), "POST", "/v1/messages/count_tokens", Some(body)).await;
    assert_eq!(r.json(), json!({"input_tokens": 5}));
    let r = request(
        mock.addr(),
        "POST",
        "/v1/messages",
        Some(r#"{"model":"status:529","messages":[]}"#),
    )
    .await;
    assert_eq!(r.status, 529);
    assert_eq!(
        r.json(),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "mock upstream status 529"}})
    );
}

#[tokio::test]
async fn set_models_at_run_time() {
    let mock = start(Flavour::LlamaSwap).await;
    assert_eq!(mock.models(), three_models());
    mock.set_models(vec![
        MockModel::new("new-model", Some(16384)).with_loaded(false),
        MockModel::new("qwen3-8b", Some(8192)).with_loaded(false),
    ]);
    let v = get_json(&mock, "/v1/models").await.1;
    assert_eq!(ids(&v["data"]), ["new-model", "qwen3-8b"]);
    assert_eq!(get_json(&mock, "/running").await.1, json!({"running": []}));
    assert_eq!(get(&mock, "/upstream/qwen3-8b/props").await.status, 404);

    // set_listed_models: loaded, context window 4096; None restores the initial models.
    mock.set_listed_models(Some(vec!["a".to_owned(), "b/c".to_owned()]));
    assert_eq!(
        mock.models(),
        [
            MockModel::new("a", Some(4096)),
            MockModel::new("b/c", Some(4096))
        ]
    );
    let v = get_json(&mock, "/upstream/b/c/props").await.1;
    assert_eq!(v["default_generation_settings"]["n_ctx"], 4096);
    mock.set_listed_models(None);
    assert_eq!(mock.models(), three_models());

    // The default mock restores MODEL_IDS.
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["slow-first:3000".to_owned()]));
    let v = get_json(&mock, "/v1/models").await.1;
    assert_eq!(ids(&v["data"]), ["slow-first:3000"]);
    assert_eq!(v["data"][0]["meta"]["n_ctx"], 4096);
    mock.set_listed_models(None);
    let v = get_json(&mock, "/v1/models").await.1;
    assert_eq!(ids(&v["data"]), modelyard_testkit::MODEL_IDS);
}

async fn discovery_delay_case(flavour: Flavour) {
    const DELAY: Duration = Duration::from_millis(1000);
    let mock = start(flavour).await;
    mock.set_discovery_delay_ms(1000);
    let probe = match flavour {
        Flavour::Ollama => "/api/tags",
        Flavour::LlamaSwap => "/running",
        Flavour::LlamaCpp => "/props",
        Flavour::LmStudio => "/api/v0/models",
        _ => "/v1/models",
    };
    let t = std::time::Instant::now();
    let addr = mock.addr();
    let slow = tokio::spawn(async move { request(addr, "GET", probe, None).await });
    // Wait until the probe is being served, then chat (stream and not) alongside it.
    eventually(Duration::from_secs(5), "the mock is serving it", || {
        std::future::ready(mock.in_flight() > 0)
    })
    .await;
    assert_eq!(chat(&mock, "echo", false, false).await.status, 200);
    let data = chat(&mock, "echo", true, false).await.sse_data();
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(
        t.elapsed() < DELAY,
        "{flavour:?}: chat waited for the probe"
    );
    assert!(!slow.is_finished(), "{flavour:?}");
    assert_eq!(slow.await.unwrap().status, 200);
    assert!(t.elapsed() >= DELAY, "{flavour:?}");
    // Unknown routes are not delayed.
    let t = std::time::Instant::now();
    assert_eq!(get(&mock, "/nope").await.status, 404);
    assert!(t.elapsed() < DELAY);

    mock.set_discovery_delay_ms(0);
    let t = std::time::Instant::now();
    assert_eq!(get(&mock, probe).await.status, 200);
    assert!(t.elapsed() < DELAY, "{flavour:?}");
}

#[tokio::test]
async fn discovery_delay_never_delays_chat() {
    futures_util::future::join_all(Flavour::ALL.map(discovery_delay_case)).await;
}

#[tokio::test]
async fn discovery_delay_applies_to_every_discovery_route() {
    const DELAY: Duration = Duration::from_millis(50);
    let cases: &[(Flavour, &str, &str, Option<&str>)] = &[
        (Flavour::LlamaCpp, "GET", "/health", None),
        (Flavour::LlamaCpp, "GET", "/v1/models", None),
        (Flavour::LlamaCpp, "GET", "/props", None),
        (Flavour::LlamaSwap, "GET", "/running", None),
        (Flavour::LlamaSwap, "GET", "/upstream/qwen3-8b/props", None),
        (Flavour::LlamaSwap, "GET", "/health", None),
        (Flavour::Vllm, "GET", "/health", None),
        (Flavour::Ollama, "GET", "/", None),
        (Flavour::Ollama, "GET", "/api/tags", None),
        (
            Flavour::Ollama,
            "POST",
            "/api/show",
            Some(r#"{"model":"qwen3-8b"}"#),
        ),
        (Flavour::Ollama, "GET", "/api/ps", None),
        (Flavour::OpenRouter, "GET", "/api/v1/models", None),
    ];
    for &(flavour, method, path, body) in cases {
        let mock = start(flavour).await;
        mock.set_discovery_delay_ms(50);
        let t = std::time::Instant::now();
        let r = request(mock.addr(), method, path, body).await;
        assert_eq!(r.status, 200, "{flavour:?} {path}");
        assert!(t.elapsed() >= DELAY, "{flavour:?} {path}");
    }
}
