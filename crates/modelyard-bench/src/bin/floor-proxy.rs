//! `floor-proxy`: **the floor** of `scripts/bench-compare.sh` — the least work any LLM gateway
//! must do per request, written as plainly as possible so that a gateway can be compared with
//! it in the same run on the same machine (issue 20).
//!
//! Per request (any path; `POST /v1/chat/completions` in the bench):
//!
//! 1. hyper HTTP/1.1 server, `TCP_NODELAY` on every accepted socket, keep-alive;
//! 2. reads the whole body and parses it as JSON (a body that is not a JSON object gets `400`
//!    with an OpenAI error envelope);
//! 3. rewrites `model`: everything up to and including the first `/` is removed
//!    (`floor/mock-model` → `mock-model`), as a gateway maps its id to the upstream's;
//! 4. for `"stream": true`, sets `stream_options.include_usage = true`;
//! 5. forwards to `<upstream><path>` over a pooled keep-alive connection (reqwest; its
//!    connector sets `TCP_NODELAY`);
//! 6. taps usage: non-streamed, parses the answer's JSON `usage`; streamed, passes every chunk on
//!    as it arrives and parses only the SSE `data:` lines that mention `"usage"`;
//! 7. sends one log record per request (model, status, tokens, microseconds) to a bounded
//!    channel drained by one task (a record that does not fit is counted as dropped).
//!
//! Usage: `floor-proxy --upstream http://127.0.0.1:PORT [--listen 127.0.0.1:0]`. Prints its
//! base URL (`http://127.0.0.1:PORT`) on one line of stdout once it accepts connections, then
//! serves until SIGINT or SIGTERM. On SIGINT it prints the records drained and dropped to stderr.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use axum::body::Body;
use bytes::Bytes;
use futures_util::StreamExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::mpsc;

/// Largest request body accepted, bytes.
const MAX_BODY: usize = 32 << 20;
/// Capacity of the log channel, records.
const LOG_QUEUE: usize = 8_192;
/// Longest SSE line kept while looking for usage, bytes; longer lines are skipped.
const MAX_LINE: usize = 1 << 20;

/// One log record: what a gateway's call log must at least keep.
#[derive(Debug)]
struct LogRecord {
    /// The upstream model id sent.
    model: String,
    /// Upstream HTTP status.
    status: u16,
    /// Prompt and completion tokens from the upstream's `usage`, when it sent one.
    usage: Option<(u64, u64)>,
    /// Request start to the end of the answer, microseconds.
    micros: u64,
}

/// State shared by every connection.
struct Floor {
    /// Pooled client to the upstream.
    client: reqwest::Client,
    /// Upstream base URL without a trailing `/`.
    upstream: String,
    /// The log channel.
    log: mpsc::Sender<LogRecord>,
    /// Records that did not fit in the channel.
    dropped: AtomicU64,
}

impl Floor {
    /// Sends `record` to the log task, counting it as dropped when the queue is full.
    fn log(&self, record: LogRecord) {
        if self.log.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Parses `--upstream URL [--listen ADDR]`.
fn parse_args() -> Result<(String, SocketAddr)> {
    let mut upstream = None;
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--upstream" => upstream = Some(it.next().context("--upstream needs a URL")?),
            "--listen" => {
                listen = it
                    .next()
                    .context("--listen needs an address")?
                    .parse()
                    .context("--listen")?
            }
            other => bail!(
                "unknown argument {other:?}\nusage: floor-proxy --upstream URL [--listen ADDR]"
            ),
        }
    }
    let upstream = upstream.context("--upstream URL is required")?;
    Ok((upstream.trim_end_matches('/').to_owned(), listen))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (upstream, listen) = parse_args()?;
    let (tx, mut rx) = mpsc::channel::<LogRecord>(LOG_QUEUE);
    let floor = Arc::new(Floor {
        client: reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1_024)
            .build()?,
        upstream,
        log: tx,
        dropped: AtomicU64::new(0),
    });
    // The log drain: keeps a count and the token sums, as a writer would batch them.
    let drained = Arc::new(AtomicU64::new(0));
    let drain_count = drained.clone();
    tokio::spawn(async move {
        let mut tokens = 0u64;
        let mut batch = Vec::with_capacity(256);
        while rx.recv_many(&mut batch, 256).await > 0 {
            for r in batch.drain(..) {
                let (p, c) = r.usage.unwrap_or((0, 0));
                tokens = tokens.wrapping_add(p + c + u64::from(r.status) + r.micros);
                std::hint::black_box(&r.model);
            }
            drain_count.fetch_add(1, Ordering::Relaxed);
        }
        std::hint::black_box(tokens);
    });

    // An accept queue of 1024 like modelyard's, not `TcpListener::bind`'s 128.
    let socket = if listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    println!("http://{}", listener.local_addr()?);
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            let floor = floor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(floor.clone(), req));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = accept => {}
        _ = tokio::signal::ctrl_c() => {
            eprintln!(
                "floor-proxy: {} log batches drained, {} records dropped",
                drained.load(Ordering::Relaxed),
                floor.dropped.load(Ordering::Relaxed)
            );
        }
    }
    Ok(())
}

/// An OpenAI error envelope with `status`.
fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// One request: parse, rewrite, forward, tap, log.
async fn handle(floor: Arc<Floor>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let body = match axum::body::to_bytes(Body::new(req.into_body()), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    let mut json: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return Ok(error(StatusCode::BAD_REQUEST, "body is not a JSON object")),
    };
    let model = match json.get("model").and_then(Value::as_str) {
        Some(m) => m.split_once('/').map_or(m, |(_, rest)| rest).to_owned(),
        None => return Ok(error(StatusCode::BAD_REQUEST, "model is required")),
    };
    let stream = json.get("stream").and_then(Value::as_bool) == Some(true);
    if let Some(obj) = json.as_object_mut() {
        obj.insert("model".into(), Value::String(model.clone()));
        if stream {
            let opts = obj
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(opts) = opts.as_object_mut() {
                opts.insert("include_usage".into(), Value::Bool(true));
            } else {
                *opts = serde_json::json!({"include_usage": true});
            }
        }
    }
    let out = match serde_json::to_vec(&json) {
        Ok(b) => b,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST, "body cannot be re-encoded")),
    };
    let upstream = match floor
        .client
        .post(format!("{}{path}", floor.upstream))
        .header("content-type", "application/json")
        .body(out)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(error(StatusCode::BAD_GATEWAY, &format!("upstream: {e}"))),
    };
    let status = upstream.status();
    let content_type = upstream.headers().get(hyper::header::CONTENT_TYPE).cloned();
    let mut builder = Response::builder().status(status.as_u16());
    if let Some(ct) = content_type {
        builder = builder.header(hyper::header::CONTENT_TYPE, ct);
    }
    let resp = if stream && status.is_success() {
        let mut tap = Tap {
            floor: floor.clone(),
            model,
            status: status.as_u16(),
            start,
            line: Vec::new(),
            usage: None,
        };
        let body = upstream.bytes_stream().map(move |chunk| {
            if let Ok(bytes) = &chunk {
                tap.feed(bytes);
            }
            chunk
        });
        builder.body(Body::from_stream(body))
    } else {
        let bytes = match upstream.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(error(StatusCode::BAD_GATEWAY, &format!("upstream: {e}"))),
        };
        floor.log(LogRecord {
            model,
            status: status.as_u16(),
            usage: serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| usage_of(&v)),
            micros: micros(start),
        });
        builder.body(Body::from(bytes))
    };
    Ok(resp.unwrap_or_else(|_| error(StatusCode::BAD_GATEWAY, "bad upstream response")))
}

/// Microseconds since `start`, saturating.
fn micros(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// `usage.prompt_tokens` and `usage.completion_tokens` of an answer or chunk.
fn usage_of(v: &Value) -> Option<(u64, u64)> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    Some((
        u.get("prompt_tokens").and_then(Value::as_u64).unwrap_or(0),
        u.get("completion_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    ))
}

/// The usage tap of one stream; sends the log record when the stream ends or is dropped.
struct Tap {
    floor: Arc<Floor>,
    model: String,
    status: u16,
    start: Instant,
    /// The unfinished SSE line carried over from the previous chunk.
    line: Vec<u8>,
    usage: Option<(u64, u64)>,
}

impl Tap {
    /// Scans `bytes` for complete lines and parses the `data:` lines that mention usage.
    fn feed(&mut self, bytes: &Bytes) {
        let mut rest: &[u8] = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.line.is_empty() {
                self.line_done(head);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.line_done(&line);
            }
        }
        if !rest.is_empty() && self.line.len() + rest.len() <= MAX_LINE {
            self.line.extend_from_slice(rest);
        }
    }

    /// One complete line.
    fn line_done(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if memmem(data, b"\"usage\"") {
            if let Some(u) = serde_json::from_slice::<Value>(data.trim_ascii())
                .ok()
                .and_then(|v| usage_of(&v))
            {
                self.usage = Some(u);
            }
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.floor.log(LogRecord {
            model: std::mem::take(&mut self.model),
            status: self.status,
            usage: self.usage,
            micros: micros(self.start),
        });
    }
}

/// Whether `needle` occurs in `hay`.
fn memmem(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floor() -> (Arc<Floor>, mpsc::Receiver<LogRecord>) {
        let (tx, rx) = mpsc::channel(4);
        let floor = Arc::new(Floor {
            client: reqwest::Client::new(),
            upstream: String::new(),
            log: tx,
            dropped: AtomicU64::new(0),
        });
        (floor, rx)
    }

    #[test]
    fn a_usage_event_split_across_chunks_is_tapped_and_logged_once_when_the_stream_ends() {
        let (floor, mut rx) = floor();
        let mut tap = Tap {
            floor,
            model: "m".into(),
            status: 200,
            start: Instant::now(),
            line: Vec::new(),
            usage: None,
        };
        tap.feed(&Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"usage\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"us",
        ));
        tap.feed(&Bytes::from_static(
            b"age\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
        ));
        assert!(
            rx.try_recv().is_err(),
            "nothing is logged before the stream ends"
        );
        drop(tap);
        let record = rx.try_recv().unwrap();
        assert_eq!((record.model.as_str(), record.status), ("m", 200));
        assert_eq!(record.usage, Some((3, 4)));
        assert!(rx.try_recv().is_err(), "one record per request");
    }
}
