//! A hostile upstream: a raw TCP server that speaks just enough HTTP/1.1 to
//! misbehave at the byte level (what an axum server cannot do: reset the
//! connection, stop mid-chunk, send bytes that are not UTF-8, send a line
//! that never ends).
//!
//! Like [`crate::MockUpstream`], the behaviour is chosen by the request's
//! `model` ([`HOSTILE_MODELS`]); `GET /v1/models` lists them all. Every
//! response is `Connection: close` (one request per connection); SSE bodies
//! use chunked transfer encoding, so a dropped connection is a broken body,
//! not a clean end.
//!
//! | model | answer |
//! |---|---|
//! | `ok` | a normal completion: "hello world", usage 3 + 2 |
//! | `hang` | reads the request, never answers (until the client leaves) |
//! | `slow-first` | sends the SSE head, never a body chunk |
//! | `drop` | one chunk, then closes mid-body |
//! | `reset` | one chunk, then a TCP reset (`SO_LINGER` 0) |
//! | `bad-json` | `data: {not json` |
//! | `non-utf8` | a `data:` line with bytes `ff fe` |
//! | `no-data` | events without `data:` lines, then a clean end without `[DONE]` |
//! | `status-429` / `status-503` | that status with `Retry-After: 7` / `120` |
//! | `huge-index` | a tool call with `index` 4294967295 |
//! | `usage-max` | every usage count 2^64−1 |
//! | `usage-overflow` | prompt and completion 2^64−1, no total (overflows on add) |
//! | `huge-line` | `data: ` and 64 MiB without a newline |
//! | `keepalive` | `: keep-alive` comments every 50 ms, forever |
//! | `redirect` | `302` to `/redirected` on this server (counted) |
//! | `auth-401` / `auth-403` | that status with OpenAI's invalid-key envelope |

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The models [`HostileUpstream`] lists and understands.
pub const HOSTILE_MODELS: &[&str] = &[
    "ok",
    "hang",
    "slow-first",
    "drop",
    "reset",
    "bad-json",
    "non-utf8",
    "no-data",
    "status-429",
    "status-503",
    "huge-index",
    "usage-max",
    "usage-overflow",
    "huge-line",
    "keepalive",
    "redirect",
    "auth-401",
    "auth-403",
];

/// Size of the `huge-line` line, bytes.
pub const HUGE_LINE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Default)]
struct Counters {
    chat: AtomicUsize,
    redirected: AtomicUsize,
}

/// The running hostile server; stops when dropped.
pub struct HostileUpstream {
    addr: SocketAddr,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileUpstream {
    /// Binds `127.0.0.1:0` and serves on a spawned task.
    pub async fn start() -> HostileUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counters = Arc::new(Counters::default());
        let shared = counters.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                tokio::spawn(serve(socket, addr, shared.clone()));
            }
        });
        HostileUpstream {
            addr,
            counters,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Chat completion requests received.
    pub fn chat_requests(&self) -> usize {
        self.counters.chat.load(Ordering::SeqCst)
    }

    /// Requests to `/redirected` (a followed redirect).
    pub fn redirected_requests(&self) -> usize {
        self.counters.redirected.load(Ordering::SeqCst)
    }
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

async fn read_request(socket: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request { method, path, body })
}

/// Waits until the peer closes the connection (or a minute passes).
async fn until_closed(socket: &mut TcpStream) {
    let mut chunk = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn response(status: &str, extra_headers: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

const SSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

/// One HTTP chunk holding `data`.
fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn event(value: &Value) -> Vec<u8> {
    format!("data: {value}\n\n").into_bytes()
}

fn delta_event(delta: Value, finish: Option<&str>) -> Vec<u8> {
    event(&json!({
        "id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "hostile-upstream",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }))
}

fn usage_event(usage: Value) -> Vec<u8> {
    event(&json!({
        "id": "chatcmpl-hostile", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": "hostile-upstream", "choices": [], "usage": usage,
    }))
}

fn completion(usage: Value) -> Vec<u8> {
    json!({
        "id": "chatcmpl-hostile", "object": "chat.completion", "created": 1_700_000_000,
        "model": "hostile-upstream",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world"},
                     "finish_reason": "stop"}],
        "usage": usage,
    })
    .to_string()
    .into_bytes()
}

fn max_usage() -> Value {
    json!({
        "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX, "total_tokens": u64::MAX,
        "prompt_tokens_details": {"cached_tokens": u64::MAX},
        "completion_tokens_details": {"reasoning_tokens": u64::MAX},
    })
}

fn overflow_usage() -> Value {
    json!({"prompt_tokens": u64::MAX, "completion_tokens": u64::MAX})
}

fn ok_usage() -> Value {
    json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
}

/// A normal stream's events with `usage`.
fn ok_events(usage: Value) -> Vec<Vec<u8>> {
    vec![
        delta_event(json!({"role": "assistant", "content": ""}), None),
        delta_event(json!({"content": "hello "}), None),
        delta_event(json!({"content": "world"}), None),
        delta_event(json!({}), Some("stop")),
        usage_event(usage),
        b"data: [DONE]\n\n".to_vec(),
    ]
}

async fn write_all(socket: &mut TcpStream, bytes: &[u8]) -> bool {
    socket.write_all(bytes).await.is_ok() && socket.flush().await.is_ok()
}

/// Writes the SSE head and `events` (one chunk each); with `end`, the last
/// chunk too.
async fn sse(socket: &mut TcpStream, events: &[Vec<u8>], end: bool) -> bool {
    if !write_all(socket, SSE_HEAD).await {
        return false;
    }
    for ev in events {
        if !write_all(socket, &chunk(ev)).await {
            return false;
        }
    }
    !end || write_all(socket, LAST_CHUNK).await
}

async fn serve(mut socket: TcpStream, addr: SocketAddr, counters: Arc<Counters>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    match (request.method.as_str(), request.path.as_str()) {
        ("GET", "/v1/models") => {
            let data: Vec<Value> = HOSTILE_MODELS
                .iter()
                .map(|id| json!({"id": id, "object": "model", "owned_by": "hostile"}))
                .collect();
            let body = json!({"object": "list", "data": data}).to_string();
            write_all(
                &mut socket,
                &response("200 OK", "", "application/json", body.as_bytes()),
            )
            .await;
        }
        ("POST", "/v1/chat/completions") => {
            counters.chat.fetch_add(1, Ordering::SeqCst);
            chat(socket, addr, &request.body).await;
        }
        (_, "/redirected") => {
            counters.redirected.fetch_add(1, Ordering::SeqCst);
            let body = completion(ok_usage());
            write_all(
                &mut socket,
                &response("200 OK", "", "application/json", &body),
            )
            .await;
        }
        _ => {
            write_all(
                &mut socket,
                &response("404 Not Found", "", "text/plain", b"not found"),
            )
            .await;
        }
    }
}

async fn chat(mut socket: TcpStream, addr: SocketAddr, body: &[u8]) {
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("").to_owned();
    let stream = request["stream"].as_bool() == Some(true);
    let s = &mut socket;
    match model.as_str() {
        "hang" => until_closed(s).await,
        "slow-first" if stream => {
            write_all(s, SSE_HEAD).await;
            until_closed(s).await;
        }
        "slow-first" => until_closed(s).await,
        "status-429" | "status-503" => {
            let (status, retry) = if model == "status-429" {
                ("429 Too Many Requests", "7")
            } else {
                ("503 Service Unavailable", "120")
            };
            let body = json!({"error": {"message": format!("hostile {status}"),
                "type": "rate_limit_error", "param": null, "code": null}});
            write_all(
                s,
                &response(
                    status,
                    &format!("Retry-After: {retry}\r\n"),
                    "application/json",
                    body.to_string().as_bytes(),
                ),
            )
            .await;
        }
        "auth-401" | "auth-403" => {
            let status = if model == "auth-401" {
                "401 Unauthorized"
            } else {
                "403 Forbidden"
            };
            let body = json!({"error": {
                "message": "Incorrect API key provided: sk-hostile. You can find your API key at https://platform.openai.com/account/api-keys.",
                "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
            write_all(
                s,
                &response(status, "", "application/json", body.to_string().as_bytes()),
            )
            .await;
        }
        "redirect" => {
            write_all(
                s,
                &response(
                    "302 Found",
                    &format!("Location: http://{addr}/redirected\r\n"),
                    "text/plain",
                    b"moved",
                ),
            )
            .await;
        }
        "ok" | "usage-max" | "usage-overflow" if !stream => {
            let usage = match model.as_str() {
                "usage-max" => max_usage(),
                "usage-overflow" => overflow_usage(),
                _ => ok_usage(),
            };
            write_all(
                s,
                &response("200 OK", "", "application/json", &completion(usage)),
            )
            .await;
        }
        "ok" => {
            sse(s, &ok_events(ok_usage()), true).await;
        }
        "usage-max" => {
            sse(s, &ok_events(max_usage()), true).await;
        }
        "usage-overflow" => {
            sse(s, &ok_events(overflow_usage()), true).await;
        }
        "drop" => {
            let first = delta_event(json!({"role": "assistant", "content": "hello "}), None);
            // Half of the next chunk, then the connection closes.
            if sse(s, &[first], false).await {
                write_all(s, b"40\r\ndata: {\"choi").await;
            }
        }
        "reset" => {
            let first = delta_event(json!({"role": "assistant", "content": "hello "}), None);
            if sse(s, &[first], false).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
                // SO_LINGER 0: closing sends RST instead of FIN.
                #[allow(deprecated)]
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(socket);
            }
        }
        "bad-json" => {
            let events = [
                delta_event(json!({"role": "assistant", "content": ""}), None),
                b"data: {not json\n\n".to_vec(),
                b"data: [DONE]\n\n".to_vec(),
            ];
            sse(s, &events, true).await;
        }
        "non-utf8" => {
            let mut bad = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"".to_vec();
            bad.extend_from_slice(&[0xff, 0xfe, 0xc3]);
            bad.extend_from_slice(b"\"}}]}\n\n");
            let events = [
                delta_event(json!({"role": "assistant", "content": ""}), None),
                bad,
                b"data: [DONE]\n\n".to_vec(),
            ];
            sse(s, &events, true).await;
        }
        "no-data" => {
            let events = [
                b"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n".to_vec(),
                b"event: message\nid: 1\n\n".to_vec(),
                b"[DONE]\n\n".to_vec(),
            ];
            sse(s, &events, true).await;
        }
        "huge-index" => {
            let events = [
                delta_event(json!({"role": "assistant", "content": null}), None),
                delta_event(
                    json!({"tool_calls": [{"index": 4_294_967_295u64, "id": "call_1",
                        "type": "function", "function": {"name": "f", "arguments": "{}"}}]}),
                    None,
                ),
                delta_event(json!({}), Some("tool_calls")),
                b"data: [DONE]\n\n".to_vec(),
            ];
            sse(s, &events, true).await;
        }
        "huge-line" => {
            if !sse(s, &[b"data: ".to_vec()], false).await {
                return;
            }
            let block = vec![b'a'; 64 * 1024];
            let piece = chunk(&block);
            for _ in 0..HUGE_LINE_BYTES / block.len() {
                if !write_all(s, &piece).await {
                    return;
                }
            }
            until_closed(s).await;
        }
        "keepalive" => {
            if !write_all(s, SSE_HEAD).await {
                return;
            }
            let piece = chunk(b": keep-alive\n\n");
            for _ in 0..1200 {
                if !write_all(s, &piece).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        _ => {
            let body = json!({"error": {"message": format!("unknown hostile model {model:?}"),
                "type": "invalid_request_error", "param": "model", "code": null}});
            write_all(
                s,
                &response(
                    "404 Not Found",
                    "",
                    "application/json",
                    body.to_string().as_bytes(),
                ),
            )
            .await;
        }
    }
}
