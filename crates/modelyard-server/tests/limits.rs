//! `[limits]` end to end: request caps of chat completions, body size, the
//! header-read timeout, and the caps on open SSE responses (per caller and
//! in total). Every wait is bounded; everything listens on 127.0.0.1.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::conv::{create, Sse};
use common::{chat_body, error_envelope, TestServer};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest time a refusal may take to count as fast.
const FAST: Duration = Duration::from_secs(1);
/// Bound of every poll in these tests.
const WAIT: Duration = Duration::from_secs(5);

/// The chat requests the mock received.
fn chat_requests(mock: &MockUpstream) -> usize {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/chat/completions")
        .count()
}

async fn json_of(response: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value, headers)
}

fn content_type(headers: &reqwest::header::HeaderMap) -> &str {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A streamed chat body for `model` whose answer echoes `words` words, so a
/// `slow:<ms>` model keeps it open for about `words × ms`.
fn long_stream(model: &str, words: usize) -> Value {
    let prompt = vec!["word"; words].join(" ");
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
    })
}

/// Opens a streamed completion and reads its first chunk (so it is open
/// on the server).
async fn open_stream(server: &TestServer, body: &Value) -> reqwest::Response {
    let mut response = server.chat(body).await;
    assert_eq!(response.status(), 200, "stream opens");
    let first = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("first chunk in time")
        .expect("stream body")
        .expect("a first chunk");
    assert!(first.starts_with(b"data: "), "{first:?}");
    response
}

/// Asserts a 429 with `Retry-After: 1` naming `cap`, answered within
/// [`FAST`]; `openai` picks the envelope, else a problem document.
async fn assert_refused(response: reqwest::Response, started: Instant, cap: &str, openai: bool) {
    // (A stream that opened would never end: check the status first.)
    assert_eq!(response.status(), 429, "refused by limits.{cap}");
    let (status, body, headers) = json_of(response).await;
    assert!(
        started.elapsed() < FAST,
        "refused fast, took {:?}",
        started.elapsed()
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1"),
        "{headers:?}"
    );
    if openai {
        let error = error_envelope(&body);
        assert_eq!(error["type"], "rate_limit_exceeded", "{body}");
        assert_eq!(error["code"], "rate_limit_exceeded", "{body}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(&format!("limits.{cap}")), "{message}");
    } else {
        assert!(
            content_type(&headers).starts_with("application/problem+json"),
            "{headers:?}"
        );
        assert_eq!(body["status"], 429, "{body}");
        assert_eq!(body["limit"], cap, "{body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(&format!("limits.{cap}")), "{detail}");
    }
}

/// Retries a streamed completion until it is accepted (a slot was freed);
/// returns the open response.
async fn stream_once_freed(server: &TestServer, body: &Value) -> reqwest::Response {
    eventually(WAIT, "a slot freed", || async move {
        let response = server.chat(body).await;
        if response.status() == 200 {
            return Ok(response);
        }
        assert_eq!(response.status(), 429, "only the cap refuses");
        Err(response.status())
    })
    .await
}

/// Reads a response body to its end, within [`WAIT`].
async fn read_to_end(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, response.chunk()).await {
            Err(_) => panic!("body did not end within {WAIT:?}"),
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            Ok(Ok(None)) => return String::from_utf8(body).expect("UTF-8 body"),
            Ok(Err(e)) => panic!("body failed: {e}"),
        }
    }
}

// -------------------------------------------------------------------------
// Request caps

#[tokio::test]
async fn oversized_bodies_are_413_in_each_surfaces_shape() {
    let server = TestServer::builder()
        .server("max_body_bytes = 1024")
        .start()
        .await;
    let big = "x".repeat(2048);

    // The OpenAI endpoint: the envelope.
    let mut body = chat_body("mock/echo", false);
    body["messages"][0]["content"] = json!(big);
    let (status, body, _) = json_of(server.chat(&body).await).await;
    assert_eq!(status, 413, "{body}");
    let message = error_envelope(&body)["message"].as_str().unwrap();
    assert!(message.contains("1024"), "names the limit: {message}");

    // Our API: a problem document, with Content-Length ...
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .json(&json!({"title": big}))
        .send()
        .await
        .unwrap();
    let (status, body, headers) = json_of(response).await;
    assert_eq!(status, 413, "{body}");
    assert!(content_type(&headers).starts_with("application/problem+json"));
    assert_eq!(body["status"], 413);
    assert!(body["detail"].as_str().unwrap().contains("1024"), "{body}");

    // ... and chunked, without one.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"title\": \"".to_owned()),
        Ok(big.clone()),
        Ok("\"}".to_owned()),
    ];
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (status, body, headers) = json_of(response).await;
    assert_eq!(status, 413, "{body}");
    assert!(content_type(&headers).starts_with("application/problem+json"));

    // A small chunked body still works.
    let chunks: Vec<Result<String, std::io::Error>> =
        vec![Ok("{\"title\": ".to_owned()), Ok("\"small\"}".to_owned())];
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    let (status, body, _) = json_of(response).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["title"], "small");

    assert_eq!(chat_requests(&server.mock), 0, "nothing reached the mock");
    server.shutdown().await;
}

#[tokio::test]
async fn chat_request_caps_are_400_naming_the_field_and_forward_nothing() {
    let server = TestServer::builder()
        .extra("[limits]\nmax_n = 4\nmax_output_tokens = 1000\nmax_messages = 3\nmax_tools = 2\n")
        .start()
        .await;
    let tool = json!({"type": "function", "function": {"name": "f", "parameters": {}}});
    let user = json!({"role": "user", "content": "hi"});
    let with = |key: &str, value: Value| {
        let mut body = chat_body("mock/echo", false);
        body[key] = value;
        body
    };
    let cases = [
        (with("n", json!(1_000_000)), "n", "1000000", "4"),
        (with("n", json!(5)), "n", "5", "4"),
        (
            with("max_tokens", json!(1001)),
            "max_tokens",
            "1001",
            "1000",
        ),
        (
            with("max_completion_tokens", json!(1e12)),
            "max_completion_tokens",
            "1000000000000",
            "1000",
        ),
        (
            with("messages", json!([user, user, user, user])),
            "messages",
            "4",
            "3",
        ),
        (with("tools", json!([tool, tool, tool])), "tools", "3", "2"),
    ];
    for (body, param, value, limit) in cases {
        let (status, answer, _) = json_of(server.chat(&body).await).await;
        assert_eq!(status, 400, "{param}: {answer}");
        let error = error_envelope(&answer);
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert_eq!(error["param"], param, "{answer}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(value) && message.contains(limit) && message.contains("limits."),
            "{param}: message gives the value {value} and the limit {limit}: {message}"
        );
    }
    // A wrong type is a 400 naming the field too.
    let (status, answer, _) = json_of(server.chat(&with("n", json!("two"))).await).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(error_envelope(&answer)["param"], "n");
    assert_eq!(chat_requests(&server.mock), 0, "nothing reached the mock");

    // At the caps, the request goes through.
    let mut body = with("messages", json!([user, user, user]));
    body["n"] = json!(4);
    body["max_tokens"] = json!(1000);
    body["tools"] = json!([tool, tool]);
    let (status, answer, _) = json_of(server.chat(&body).await).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(chat_requests(&server.mock), 1);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Header-read timeout

#[tokio::test]
async fn slow_header_senders_are_disconnected_while_others_are_served() {
    let server = TestServer::builder()
        .extra("[limits]\nheader_read_timeout_ms = 300\n")
        .start()
        .await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();

    // Meanwhile another client is served.
    let fresh = reqwest::Client::new();
    let health = fresh.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    for (name, stream) in [("slow", &mut slow), ("silent", &mut silent)] {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name} connection still open after {WAIT:?}"));
        match read {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!(
                "{name}: expected a closed connection, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "not before the timeout: {took:?}"
    );
    assert!(took < WAIT, "closed after about the timeout: {took:?}");

    // A prompt client on a raw keep-alive connection is answered; idle for
    // longer than the header timeout, the connection stays open (a pooled
    // client reusing it must not race a close), and its next request, sent
    // slowly in two parts within the timeout, is answered too.
    let mut prompt = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for round in 0..2 {
        if round == 1 {
            tokio::time::sleep(Duration::from_millis(900)).await;
            prompt.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            prompt.write_all(b"host: localhost\r\n\r\n").await.unwrap();
        } else {
            prompt
                .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await
                .unwrap();
        }
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, prompt.read(&mut answer))
            .await
            .expect("answered in time")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "round {round}: {answer}"
        );
        assert!(
            answer.contains("{\"status\":\"ok\""),
            "round {round}: {answer}"
        );
    }
    // A head that starts but does not finish in time closes the connection.
    prompt.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, prompt.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a stalled head on a keep-alive connection is closed"
    );
    server.shutdown().await;
}

/// Reads `stream` until the server closes it, within [`WAIT`]; what it
/// said first. Panics naming `name` when it stays open.
async fn closed_by_server(name: &str, stream: &mut tokio::net::TcpStream) -> String {
    let mut said = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => said.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "{name}: connection still open after {WAIT:?}");
    String::from_utf8_lossy(&said).into_owned()
}

// -------------------------------------------------------------------------
// Body-read timeout

#[tokio::test]
async fn a_stalled_request_body_closes_the_connection() {
    let server = TestServer::builder()
        .extra(
            "[limits]
body_read_timeout_ms = 300
",
        )
        .start()
        .await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n";
    let body = serde_json::to_string(&chat_body("mock-model", false)).unwrap();

    // Given clients that send a head and part of a body (by length and
    // chunked), then nothing.
    let mut by_length = tokio::net::TcpStream::connect(&addr).await.unwrap();
    by_length
        .write_all(
            format!(
                "{head}content-length: {}\r\n\r\n{}",
                body.len(),
                &body[..10]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut chunked = tokio::net::TcpStream::connect(&addr).await.unwrap();
    chunked
        .write_all(
            format!(
                "{head}transfer-encoding: chunked\r\n\r\na\r\n{}\r\n",
                &body[..10]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();

    // Then both connections are closed after about the timeout, and no
    // request reached the upstream.
    for (name, stream) in [("by length", &mut by_length), ("chunked", &mut chunked)] {
        closed_by_server(name, stream).await;
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200),
        "not before the timeout: {took:?}"
    );
    assert_eq!(chat_requests(&server.mock), 0);

    // A body sent in two parts within the timeout is served.
    let mut prompt = tokio::net::TcpStream::connect(&addr).await.unwrap();
    prompt
        .write_all(
            format!(
                "{head}content-length: {}\r\n\r\n{}",
                body.len(),
                &body[..10]
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    prompt.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, prompt.read(&mut answer))
        .await
        .expect("answered in time")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Connection cap

#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once_and_a_client_gets_in_later() {
    let server = TestServer::builder()
        .extra("[limits]\nmax_connections = 8\n")
        .start()
        .await;
    let addr = server.base_url.trim_start_matches("http://").to_owned();

    // Given 8 idle connections.
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }

    // When a 9th connects, it is closed at once (well before any deadline).
    let started = Instant::now();
    let mut ninth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = ninth
        .write_all(b"GET /health HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await;
    let said = closed_by_server("the 9th", &mut ninth).await;
    assert!(said.is_empty(), "the 9th is not served: {said}");
    assert!(
        started.elapsed() < FAST,
        "closed at once: {:?}",
        started.elapsed()
    );

    // Once some close, a normal client gets in.
    idle.truncate(5);
    let fresh = reqwest::Client::new();
    let (fresh, s) = (&fresh, &server);
    eventually(WAIT, "a connection freed", || async move {
        match fresh.get(s.url("/health")).send().await {
            Ok(response) if response.status() == 200 => Ok(()),
            Ok(response) => Err(format!("status {}", response.status())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    drop(idle);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Requests in flight

/// Sends a non-streamed chat completion for `model` in the background.
fn chat_in_background(server: &TestServer, model: &str) -> tokio::task::JoinHandle<u16> {
    let request = server
        .http
        .post(server.url("/v1/chat/completions"))
        .json(&chat_body(model, false));
    tokio::spawn(async move { request.send().await.map_or(0, |r| r.status().as_u16()) })
}

/// Waits until the mock has received `n` chat requests.
async fn mock_received(server: &TestServer, n: usize) {
    eventually(WAIT, &format!("the mock got {n} requests"), || async move {
        let got = chat_requests(&server.mock);
        if got >= n {
            Ok(())
        } else {
            Err(got)
        }
    })
    .await;
}

/// Retries `GET /v1/models` until it is answered 200 (a slot was freed).
async fn served_once_freed(server: &TestServer) {
    eventually(WAIT, "a slot freed", || async move {
        let response = server
            .http
            .get(server.url("/v1/models"))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            return Ok(());
        }
        assert_eq!(response.status(), 429, "only the cap refuses");
        Err(response.status())
    })
    .await;
}

#[tokio::test]
async fn requests_and_turns_in_flight_are_capped_with_a_fast_429() {
    let server = TestServer::builder()
        .listed(&["echo", "hang"])
        .extra("[limits]\nmax_concurrent_requests = 2\n")
        .start()
        .await;

    // Given two non-streamed completions that the upstream never answers.
    let hung = [
        chat_in_background(&server, "mock/hang"),
        chat_in_background(&server, "mock/hang"),
    ];
    mock_received(&server, 2).await;

    // Then a third request is refused at once, in each surface's shape,
    // and nothing more reaches the upstream; /health is not counted.
    let started = Instant::now();
    let third = server.chat(&chat_body("mock/echo", false)).await;
    assert_refused(third, started, "max_concurrent_requests", true).await;
    let started = Instant::now();
    let listing = server
        .http
        .get(server.url("/v1/conversations"))
        .send()
        .await
        .unwrap();
    assert_refused(listing, started, "max_concurrent_requests", false).await;
    let health = server.http.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(chat_requests(&server.mock), 2);

    // When the clients give up, their slots come back.
    for task in hung {
        task.abort();
    }
    served_once_freed(&server).await;

    // A background turn holds a slot while it runs (its request's): with
    // one hung completion beside it, the cap is reached.
    let conv = create(&server, json!({"title": "in flight"})).await;
    let turn = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .json(&json!({"content": "wait", "model": "mock/hang"}))
        .send()
        .await
        .unwrap();
    assert_eq!(turn.status(), 202);
    let turn: Value = turn.json().await.unwrap();
    let hung = chat_in_background(&server, "mock/hang");
    mock_received(&server, 4).await;
    let started = Instant::now();
    let refused = server
        .http
        .get(server.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_refused(refused, started, "max_concurrent_requests", true).await;
    hung.abort();
    served_once_freed(&server).await;
    // (Now the turn and one request fit; the turn's end frees its slot.)
    let turn_id = turn["turnId"].as_str().unwrap();
    let cancel = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns/{turn_id}/cancel")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let busy = chat_in_background(&server, "mock/hang");
    mock_received(&server, 5).await;
    served_once_freed(&server).await;
    busy.abort();
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Stream caps

#[tokio::test]
async fn streams_per_key_are_capped_with_a_fast_429() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:200", "slow:10"])
        .extra("[limits]\nmax_streams_per_key = 2\n")
        .start()
        .await;
    let long = long_stream("mock/slow:200", 60);
    let first = open_stream(&server, &long).await;
    let second = open_stream(&server, &long).await;

    let started = Instant::now();
    let third = server.chat(&long).await;
    assert_refused(third, started, "max_streams_per_key", true).await;
    assert_eq!(
        chat_requests(&server.mock),
        2,
        "the refused stream was not sent"
    );

    // A non-streamed request is no stream.
    let (status, body, _) = json_of(server.chat(&chat_body("mock/echo", false)).await).await;
    assert_eq!(status, 200, "{body}");

    // The client leaving a stream frees its slot; a stream that ends frees
    // it too.
    drop(second);
    let short = long_stream("mock/slow:10", 3);
    let body = read_to_end(stream_once_freed(&server, &short).await).await;
    assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
    let again = stream_once_freed(&server, &short).await;
    assert_eq!(again.status(), 200);
    drop(again);
    drop(first);
    server.shutdown().await;
}

#[tokio::test]
async fn streams_in_total_are_capped_across_endpoints() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:200"])
        .extra("[limits]\nmax_streams = 2\n")
        .start()
        .await;
    let conv = create(&server, json!({"title": "capped"})).await;
    let mut first = Sse::open(&server, &conv, None).await;
    first.replay().await;
    let mut second = Sse::open(&server, &conv, None).await;
    second.replay().await;

    // Events stream: problem document.
    let started = Instant::now();
    let third = server
        .http
        .get(server.url(&format!("/v1/conversations/{conv}/events")))
        .send()
        .await
        .unwrap();
    assert_refused(third, started, "max_streams", false).await;

    // A streamed turn: refused before it starts.
    let started = Instant::now();
    let turn = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .json(&json!({"content": "hello", "model": "mock/echo", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_refused(turn, started, "max_streams", false).await;
    let turns = common::conv::get(&server, &format!("/v1/conversations/{conv}/turns")).await;
    assert_eq!(turns["data"].as_array().unwrap().len(), 0, "{turns}");

    // A streamed completion: the envelope.
    let started = Instant::now();
    let chat = server.chat(&long_stream("mock/slow:200", 5)).await;
    assert_refused(chat, started, "max_streams", true).await;
    assert_eq!(chat_requests(&server.mock), 0);

    // Non-streaming requests go on.
    let (status, body, _) = json_of(server.chat(&chat_body("mock/echo", false)).await).await;
    assert_eq!(status, 200, "{body}");
    common::conv::get(&server, &format!("/v1/conversations/{conv}")).await;

    // Closing an events stream frees a slot.
    drop(first);
    let (s, c) = (&server, conv.as_str());
    let mut reopened = eventually(WAIT, "a slot freed", || async move {
        let response = s
            .http
            .get(s.url(&format!("/v1/conversations/{c}/events")))
            .send()
            .await
            .unwrap();
        if response.status() == 200 {
            return Ok(Sse::new(response));
        }
        assert_eq!(response.status(), 429);
        Err(response.status())
    })
    .await;
    reopened.replay().await;
    drop(reopened);
    drop(second);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// Keep-alives

/// A one-model OpenAI-compatible upstream whose stream sends SSE keep-alive
/// comments between its events.
async fn keep_alive_upstream() -> String {
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/v1/models",
            get(|| async {
                axum::Json(json!({"object": "list", "data": [{"id": "ka", "object": "model"}]}))
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async {
                let chunk = |delta: Value, finish: Value| {
                    let event = json!({
                        "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "ka",
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    });
                    format!("data: {event}\n\n")
                };
                let parts = vec![
                    chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                    ": keep-alive\n\n".to_owned(),
                    chunk(json!({"content": "hi"}), Value::Null),
                    ": still here\n\n".to_owned(),
                    chunk(json!({}), json!("stop")),
                    "data: [DONE]\n\n".to_owned(),
                ];
                let body =
                    futures_util::stream::unfold(parts.into_iter(), |mut parts| async move {
                        let part = parts.next()?;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((Ok::<_, std::convert::Infallible>(part), parts))
                    });
                axum::response::Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(axum::body::Body::from_stream(body))
                    .unwrap()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    url
}

#[tokio::test]
async fn streamed_completions_pass_upstream_keep_alives_on() {
    let upstream = keep_alive_upstream().await;
    let server = TestServer::builder()
        .providers(&format!(
            "[[providers]]\nname = \"ka\"\nkind = \"openai\"\nbase_url = \"{upstream}\"\n"
        ))
        .start()
        .await;
    let response = server.chat(&chat_body("ka/ka", true)).await;
    assert_eq!(response.status(), 200);
    let body = read_to_end(response).await;
    // One per network chunk of comments (two unless the network joined
    // them with their neighbours).
    assert!(
        body.contains(": keep-alive\n\n"),
        "upstream keep-alives are passed on: {body:?}"
    );
    let data: Vec<&str> = body
        .split_terminator("\n\n")
        .filter(|e| !e.starts_with(':'))
        .collect();
    assert_eq!(data.len(), 4, "{body:?}");
    assert!(data.iter().all(|e| e.starts_with("data: ")), "{body:?}");
    assert_eq!(*data.last().unwrap(), "data: [DONE]");
    assert!(data[1].contains("\"model\":\"ka/ka\""), "{body:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn one_projects_keys_cannot_take_every_stream_slot() {
    let server = TestServer::builder()
        .extra("[limits]\nmax_streams_per_key = 2\nmax_streams_per_project = 3\n")
        .start()
        .await;
    // Two keys of the default project, one of project "b".
    let admin: Value = server
        .http
        .post(server.url("/v1/keys"))
        .json(&json!({"role": "admin", "name": "a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = admin["key"].as_str().expect("a key").to_owned();
    let member: Value = server
        .http
        .post(server.url("/v1/keys"))
        .bearer_auth(&a)
        .json(&json!({"role": "member", "name": "b"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b = member["key"].as_str().expect("b key").to_owned();
    let store = modelyard_store::Store::connect(&server.db_url())
        .await
        .unwrap();
    let other = store.create_project("other").await.unwrap();
    let (_, c) = modelyard_server::service::keys::create(
        &store,
        &other,
        Some("c".into()),
        modelyard_store::Role::Member,
    )
    .await
    .map(|k| (k.row, k.secret))
    .unwrap();
    let conversation = |key: String| {
        let server = &server;
        async move {
            let created: Value = server
                .http
                .post(server.url("/v1/conversations"))
                .bearer_auth(&key)
                .json(&json!({"title": "feeds"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            created["id"].as_str().expect("conversation id").to_owned()
        }
    };
    let ours = conversation(a.clone()).await;
    let theirs = conversation(c.clone()).await;
    let feed = |key: &str, conv: &str| {
        server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/events")))
            .bearer_auth(key)
            .send()
    };

    // Given key A with 2 feeds open and key B with 1: the project's 3.
    let mut open = Vec::new();
    for key in [&a, &a, &b] {
        let response = feed(key, &ours).await.unwrap();
        assert_eq!(response.status(), 200);
        open.push(Sse::new(response));
    }

    // Then B's second is refused with the project's cap, though B itself
    // is under its own.
    let started = Instant::now();
    let refused = feed(&b, &ours).await.unwrap();
    assert_refused(refused, started, "max_streams_per_project", false).await;

    // And another project's key still gets in.
    let response = feed(&c, &theirs).await.unwrap();
    assert_eq!(response.status(), 200);
    open.push(Sse::new(response));
    drop(open);
}
