//! Tests for the mock upstream, using raw HTTP/1.1 over `tokio::net::TcpStream`.

use std::net::SocketAddr;
use std::time::Duration;

use modelyard_testkit::MockUpstream;
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
    while mock.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
