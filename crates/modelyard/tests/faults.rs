//! Hostile and broken upstreams against the built `modelyard serve` binary
//! (issue 12): hang, first-token delay, drop and reset mid-stream, malformed
//! SSE, statuses with `Retry-After`, a huge tool index, usage of 2^64−1, a
//! 64 MiB line, keep-alive comments forever, a redirect, an upstream 401/403.
//!
//! Each case checks what the client gets, the call record, that the process
//! is still alive and that the next normal request works. The provider's
//! deadlines are short (first token / idle 700 ms, total 2 s), so the suite
//! stays bounded.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use modelyard_testkit::eventually;
use modelyard_testkit::hostile::HostileUpstream;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Bound of every wait.
const LIMIT: Duration = Duration::from_secs(20);
/// The largest token count kept of one call (2^32 − 1).
const MAX_TOKENS: u64 = u32::MAX as u64;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `modelyard serve` child process in front of `hostile`; killed (and its
/// data directory removed) on drop.
struct Server {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Server {
    /// The server under test, with one attempt per request (`[routing]
    /// retries = 0`): each hostile answer is judged once, one record per
    /// request (retries have their own tests: modelyard-server's
    /// tests/routing.rs).
    async fn start(hostile: &HostileUpstream) -> Server {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("modelyard-faults-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("modelyard.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\nurl = \"sqlite://{db}\"\n\
                 data_dir = \"{data}\"\n\n[[providers]]\nname = \"hostile\"\nkind = \"openai\"\n\
                 base_url = \"{url}\"\n\n[providers.timeouts]\nconnect_ms = 1000\n\
                 first_token_ms = 700\nidle_ms = 700\ntotal_ms = 2000\nprobe_ms = 1000\n\n\
                 [routing]\nretries = 0\n",
                db = dir.join("faults.db").display(),
                data = dir.display(),
                url = hostile.base_url(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_modelyard"));
        for (key, _) in std::env::vars() {
            if key.starts_with("MODELYARD_") {
                command.env_remove(key);
            }
        }
        let child = command
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn modelyard serve");
        let mut server = Server {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            dir,
        };
        eventually(LIMIT, "modelyard becomes healthy", || {
            server.assert_alive("starting");
            let (http, url) = (server.http.clone(), server.url("/health"));
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        server
    }

    /// The exit status if the process is gone (or going: /health fails).
    async fn exited(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait().unwrap() {
            return Some(status);
        }
        if self.http.get(self.url("/health")).send().await.is_ok() {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.child.try_wait().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    fn assert_alive(&mut self, case: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            let tail: String = log
                .chars()
                .rev()
                .take(4000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("{case}: modelyard exited ({status}); log tail:\n{tail}");
        }
    }

    /// Sends a chat completion for `hostile/<model>` and reads the whole
    /// answer (bounded by [`LIMIT`]).
    async fn chat(&self, model: &str, stream: bool) -> Answer {
        let body = json!({
            "model": format!("hostile/{model}"),
            "stream": stream,
            "messages": [{"role": "user", "content": "hi"}],
        });
        let request = self.http.post(self.url("/v1/chat/completions")).json(&body);
        let response = tokio::time::timeout(LIMIT, request.send())
            .await
            .unwrap_or_else(|_| panic!("{model}: no answer within {LIMIT:?}"));
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: 0,
                    retry_after: None,
                    body: format!("request failed: {e}"),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = match tokio::time::timeout(LIMIT, response.bytes()).await {
            Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            Ok(Err(e)) => format!("body broke: {e}"),
            Err(_) => panic!("{model}: body did not end within {LIMIT:?}"),
        };
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// The calls recorded for `hostile/<model>`, newest first, once there
    /// are `n` (the call log writes asynchronously).
    async fn calls(&self, model: &str, n: usize) -> Vec<Value> {
        self.try_calls(model, n).await.unwrap()
    }

    async fn try_calls(&self, model: &str, n: usize) -> Result<Vec<Value>, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let response = self
                .http
                .get(self.url("/v1/calls"))
                .query(&[("model", format!("hostile/{model}"))])
                .send()
                .await
                .map_err(|e| format!("GET /v1/calls: {e}"))?;
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            let calls = body["data"].as_array().unwrap().clone();
            if calls.len() >= n {
                if calls.len() != n {
                    return Err(format!(
                        "{n} records expected (one per request): {calls:#?}"
                    ));
                }
                return Ok(calls);
            }
            if Instant::now() > deadline {
                return Err(format!("{n} call records expected, found {calls:#?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Alive, and a normal streamed and plain request still work.
    async fn assert_healthy(&mut self, case: &str, ok_calls: &mut usize) {
        self.assert_alive(case);
        let plain = self.chat("ok", false).await;
        assert_eq!(plain.status, 200, "{case}: next request: {plain:?}");
        let v: Value = serde_json::from_str(&plain.body).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "hello world");
        let streamed = self.chat("ok", true).await;
        assert_eq!(streamed.status, 200, "{case}: next stream: {streamed:?}");
        assert!(
            streamed.body.contains("data: [DONE]"),
            "{case}: next stream: {streamed:?}"
        );
        *ok_calls += 2;
        let calls = self.calls("ok", *ok_calls).await;
        assert!(calls[..2].iter().all(|c| c["status"] == "ok"), "{calls:#?}");
        self.assert_alive(case);
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    /// The `data:` payloads of an SSE body.
    fn events(&self) -> Vec<&str> {
        self.body
            .split("\n\n")
            .filter_map(|block| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .filter(|d| !d.is_empty())
            })
            .collect()
    }

    /// The error envelope of a non-2xx answer.
    fn envelope(&self) -> Value {
        serde_json::from_str::<Value>(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON envelope ({e}): {self:?}"))["error"]
            .clone()
    }

    /// The error event that ends a stream (no `[DONE]`).
    fn stream_error(&self) -> Value {
        assert_eq!(self.status, 200, "{self:?}");
        let events = self.events();
        assert!(
            !events.contains(&"[DONE]"),
            "no [DONE] after a fault: {self:?}"
        );
        let last = events
            .last()
            .unwrap_or_else(|| panic!("no events: {self:?}"));
        let v: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("last event is not JSON ({e}): {self:?}"));
        assert!(v["error"].is_object(), "ends with an error event: {self:?}");
        v["error"].clone()
    }
}

/// What a case must produce.
enum Expect {
    /// A non-2xx envelope: status, `type`, `code`, `Retry-After`, text in the message.
    Envelope {
        status: u16,
        kind: &'static str,
        code: Option<&'static str>,
        retry_after: Option<&'static str>,
        message: &'static str,
    },
    /// A 200 stream ending in an error event of `type`, text in its message.
    StreamError {
        kind: &'static str,
        message: &'static str,
    },
    /// A successful answer whose recorded usage is clamped.
    Clamped { total: u64 },
}

struct Case {
    model: &'static str,
    stream: bool,
    expect: Expect,
    /// The record's `httpStatus`.
    http_status: Option<u16>,
    /// Text in the record's `error` (None: the call is `ok`).
    record_error: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    use Expect::*;
    let timeout = |kind| Envelope {
        status: 504,
        kind,
        code: None,
        retry_after: None,
        message: "timed out",
    };
    vec![
        Case {
            model: "hang",
            stream: true,
            expect: timeout("upstream_timeout"),
            http_status: None,
            record_error: Some("first token timeout of 700 ms"),
        },
        Case {
            model: "hang",
            stream: false,
            expect: timeout("upstream_timeout"),
            http_status: None,
            record_error: Some("total timeout of 2000 ms"),
        },
        Case {
            model: "slow-first",
            stream: true,
            expect: StreamError {
                kind: "upstream_timeout",
                message: "first token timeout of 700 ms",
            },
            http_status: Some(200),
            record_error: Some("first token timeout"),
        },
        Case {
            model: "drop",
            stream: true,
            expect: StreamError {
                kind: "upstream_error",
                message: "connection failed",
            },
            http_status: Some(200),
            record_error: Some("connection failed"),
        },
        Case {
            model: "reset",
            stream: true,
            expect: StreamError {
                kind: "upstream_error",
                message: "connection failed",
            },
            http_status: Some(200),
            record_error: Some("connection failed"),
        },
        Case {
            model: "bad-json",
            stream: true,
            expect: StreamError {
                kind: "upstream_invalid_response",
                message: "malformed stream data",
            },
            http_status: Some(200),
            record_error: Some("malformed stream data"),
        },
        Case {
            model: "non-utf8",
            stream: true,
            expect: StreamError {
                kind: "upstream_invalid_response",
                message: "malformed stream data",
            },
            http_status: Some(200),
            record_error: Some("malformed stream data"),
        },
        Case {
            model: "no-data",
            stream: true,
            expect: StreamError {
                kind: "upstream_error",
                message: "before [DONE]",
            },
            http_status: Some(200),
            record_error: Some("before [DONE]"),
        },
        Case {
            model: "status-429",
            stream: false,
            expect: Envelope {
                status: 429,
                kind: "rate_limit_error",
                code: None,
                retry_after: Some("7"),
                message: "HTTP 429",
            },
            http_status: Some(429),
            record_error: Some("HTTP 429"),
        },
        Case {
            model: "status-503",
            stream: true,
            expect: Envelope {
                status: 503,
                kind: "rate_limit_error",
                code: None,
                retry_after: Some("120"),
                message: "HTTP 503",
            },
            http_status: Some(503),
            record_error: Some("HTTP 503"),
        },
        Case {
            model: "huge-index",
            stream: true,
            expect: StreamError {
                kind: "upstream_invalid_response",
                message: "tool call index 4294967295",
            },
            http_status: Some(200),
            record_error: Some("tool call index 4294967295"),
        },
        Case {
            model: "usage-max",
            stream: true,
            expect: Clamped { total: MAX_TOKENS },
            http_status: Some(200),
            record_error: None,
        },
        Case {
            model: "usage-max",
            stream: false,
            expect: Clamped { total: MAX_TOKENS },
            http_status: Some(200),
            record_error: None,
        },
        Case {
            model: "usage-overflow",
            stream: true,
            expect: Clamped {
                total: 2 * MAX_TOKENS,
            },
            http_status: Some(200),
            record_error: None,
        },
        Case {
            model: "usage-overflow",
            stream: false,
            expect: Clamped {
                total: 2 * MAX_TOKENS,
            },
            http_status: Some(200),
            record_error: None,
        },
        Case {
            model: "huge-line",
            stream: true,
            expect: StreamError {
                kind: "upstream_invalid_response",
                message: "larger than 8388608 bytes",
            },
            http_status: Some(200),
            record_error: Some("larger than 8388608 bytes"),
        },
        Case {
            model: "keepalive",
            stream: true,
            expect: StreamError {
                kind: "upstream_timeout",
                message: "total timeout of 2000 ms",
            },
            http_status: Some(200),
            record_error: Some("total timeout of 2000 ms"),
        },
        Case {
            model: "redirect",
            stream: false,
            expect: Envelope {
                status: 502,
                kind: "upstream_error",
                code: None,
                retry_after: None,
                message: "redirect",
            },
            http_status: Some(302),
            record_error: Some("HTTP 302"),
        },
        Case {
            model: "redirect",
            stream: true,
            expect: Envelope {
                status: 502,
                kind: "upstream_error",
                code: None,
                retry_after: None,
                message: "redirect",
            },
            http_status: Some(302),
            record_error: Some("HTTP 302"),
        },
        Case {
            model: "auth-401",
            stream: false,
            expect: Envelope {
                status: 502,
                kind: "upstream_error",
                code: Some("upstream_auth_error"),
                retry_after: None,
                message: "provider 'hostile' rejected",
            },
            http_status: Some(401),
            record_error: Some("HTTP 401"),
        },
        Case {
            model: "auth-403",
            stream: true,
            expect: Envelope {
                status: 502,
                kind: "upstream_error",
                code: Some("upstream_auth_error"),
                retry_after: None,
                message: "provider 'hostile' rejected",
            },
            http_status: Some(403),
            record_error: Some("HTTP 403"),
        },
    ]
}

fn check_answer(case: &Case, answer: &Answer) {
    let name = format!("{} (stream: {})", case.model, case.stream);
    match &case.expect {
        Expect::Envelope {
            status,
            kind,
            code,
            retry_after,
            message,
        } => {
            assert_eq!(answer.status, *status, "{name}: {answer:?}");
            let error = answer.envelope();
            assert_eq!(error["type"], *kind, "{name}: {error}");
            if let Some(code) = code {
                assert_eq!(error["code"], *code, "{name}: {error}");
            }
            assert!(
                error["message"].as_str().unwrap().contains(message),
                "{name}: {error}"
            );
            assert_eq!(answer.retry_after.as_deref(), *retry_after, "{name}");
        }
        Expect::StreamError { kind, message } => {
            let error = answer.stream_error();
            assert_eq!(error["type"], *kind, "{name}: {error}");
            assert!(
                error["message"].as_str().unwrap().contains(message),
                "{name}: {error}"
            );
        }
        Expect::Clamped { .. } => {
            assert_eq!(answer.status, 200, "{name}: {answer:?}");
            if case.stream {
                assert!(answer.events().contains(&"[DONE]"), "{name}: {answer:?}");
            } else {
                let v: Value = serde_json::from_str(&answer.body).unwrap();
                assert_eq!(v["choices"][0]["message"]["content"], "hello world");
            }
        }
    }
}

fn check_record(case: &Case, call: &Value) {
    let name = format!("{} (stream: {})", case.model, case.stream);
    assert_eq!(call["stream"], case.stream, "{name}: {call}");
    assert_eq!(
        call["httpStatus"].as_u64(),
        case.http_status.map(u64::from),
        "{name}: {call}"
    );
    match case.record_error {
        Some(text) => {
            assert_eq!(call["status"], "error", "{name}: {call}");
            assert!(
                call["error"].as_str().unwrap().contains(text),
                "{name}: {text:?} in {call}"
            );
        }
        None => assert_eq!(call["status"], "ok", "{name}: {call}"),
    }
    if let Expect::Clamped { total } = case.expect {
        assert_eq!(
            call["usage"]["totalTokens"].as_u64(),
            Some(total),
            "{name}: {call}"
        );
        assert_eq!(
            call["usage"]["promptTokens"].as_u64(),
            Some(MAX_TOKENS),
            "{name}: {call}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstreams_never_crash_the_gateway() {
    let hostile = HostileUpstream::start().await;
    let mut server = Server::start(&hostile).await;
    let mut ok_calls = 0;
    server
        .assert_healthy("before any fault", &mut ok_calls)
        .await;
    let mut seen: std::collections::HashMap<&str, usize> = Default::default();
    // Every case runs; the failures are reported together.
    let mut failures = Vec::new();
    for case in cases() {
        let name = format!("{} (stream: {})", case.model, case.stream);
        let answer = server.chat(case.model, case.stream).await;
        if let Some(status) = server.child.try_wait().unwrap() {
            failures.push(format!(
                "{name}: modelyard exited ({status}); answer {answer:?}"
            ));
            server = Server::start(&hostile).await;
            seen.clear();
            ok_calls = 0;
            continue;
        }
        let checked = std::panic::catch_unwind(|| check_answer(&case, &answer));
        if let Err(panic) = checked {
            failures.push(panic_text(&panic));
        }
        let n = seen.entry(case.model).or_default();
        *n += 1;
        match server.try_calls(case.model, *n).await {
            Ok(calls) => {
                if let Err(panic) = std::panic::catch_unwind(|| check_record(&case, &calls[0])) {
                    failures.push(panic_text(&panic));
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        if let Some(status) = server.exited().await {
            failures.push(format!("{name}: modelyard exited ({status})"));
            server = Server::start(&hostile).await;
            seen.clear();
            ok_calls = 0;
            continue;
        }
        server.assert_healthy(&name, &mut ok_calls).await;
    }
    // The aggregates over absurd usage still answer.
    for path in ["/v1/usage", "/v1/usage?groupBy=model", "/v1/llm-sessions"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        if status != 200 {
            failures.push(format!("GET {path}: {status} {body}"));
        }
    }
    // A 3xx is never followed.
    if hostile.redirected_requests() != 0 {
        failures.push("a redirect was followed".into());
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

/// A conversation turn hit by a hostile upstream ends `failed` with a
/// message (never stuck `running`), and the server stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_upstreams_fail_turns_never_leave_them_running() {
    let hostile = HostileUpstream::start().await;
    let mut server = Server::start(&hostile).await;
    let mut failures = Vec::new();
    for (model, message) in [
        ("huge-index", "tool call index 4294967295"),
        ("huge-line", "larger than 8388608 bytes"),
        ("usage-overflow", ""),
        ("bad-json", "malformed stream data"),
        ("non-utf8", "malformed stream data"),
        ("reset", "connection failed"),
        ("hang", "timed out"),
        ("keepalive", "total timeout"),
        ("auth-401", "rejected"),
        ("redirect", "HTTP 302"),
    ] {
        match turn_on(&mut server, model).await {
            Ok(turn) if message.is_empty() => {
                // Usage is clamped, not a failure.
                if turn["status"] != "completed" {
                    failures.push(format!("{model}: turn {turn}"));
                }
            }
            Ok(turn) => {
                if turn["status"] != "failed"
                    || !turn["error"].as_str().unwrap_or("").contains(message)
                {
                    failures.push(format!("{model}: failed with {message:?} expected: {turn}"));
                }
            }
            Err(e) => {
                failures.push(format!("{model}: {e}"));
                if server.child.try_wait().unwrap().is_some() {
                    server = Server::start(&hostile).await;
                }
            }
        }
    }
    let mut ok_calls = 0;
    server
        .assert_healthy("after the turns", &mut ok_calls)
        .await;
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Starts a turn on `hostile/<model>` and waits until it is no longer
/// `running`; the turn, or why not.
async fn turn_on(server: &mut Server, model: &str) -> Result<Value, String> {
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .json(&json!({"title": model, "model": format!("hostile/{model}")}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(response.status(), 201);
    let conv: Value = response.json().await.unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let response = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(response.status(), 202, "{model}");
    let turn: Value = response.json().await.unwrap();
    let turn_id = turn["turnId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            return Err(format!("modelyard exited ({status})"));
        }
        let turns: Value = server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/turns")))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let turn = turns["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == turn_id.as_str())
            .cloned()
            .expect("turn listed");
        if turn["status"] != "running" {
            return Ok(turn);
        }
        if Instant::now() > deadline {
            return Err(format!("turn still running: {turn}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
