//! Helpers of the conversation tests: HTTP calls that check the problem
//! format, turn polling, and an incremental SSE reader of
//! `/v1/conversations/{id}/events`.

use std::time::Duration;

use modelyard_testkit::eventually;
use serde_json::Value;
use tokio::time::Instant;

use super::TestServer;

/// Bound of every wait.
pub const LIMIT: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ HTTP

pub async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.http.request(method.clone(), server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    let problem = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/problem+json"));
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
    };
    if status >= 400 {
        assert!(problem, "{method} {path} → {status} is a problem document");
        assert_eq!(value["status"], status, "problem status: {value}");
        assert!(value["title"].is_string() && value["detail"].is_string());
        assert!(
            value["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{method} {path} → {status}: a problem has a code: {value}"
        );
    }
    (status, value)
}

pub async fn get(server: &TestServer, path: &str) -> Value {
    let (status, body) = send(server, "GET", path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

pub async fn create(server: &TestServer, body: Value) -> String {
    let (status, c) = send(server, "POST", "/v1/conversations", Some(body)).await;
    assert_eq!(status, 201, "create: {c}");
    c["id"].as_str().expect("id").to_owned()
}

pub async fn start_turn(server: &TestServer, conv: &str, body: Value) -> Value {
    let (status, turn) = send(
        server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "start turn: {turn}");
    assert_eq!(turn["conversationId"], conv);
    assert!(turn["turnId"].is_string(), "{turn}");
    turn
}

/// Polls the turn until it is no longer running; returns it.
pub async fn wait_turn(server: &TestServer, conv: &str, turn_id: &str) -> Value {
    let turn = eventually(
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
    .await;
    let c = get(server, &format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "idle", "{c}");
    turn
}

pub async fn run_turn(server: &TestServer, conv: &str, body: Value) -> (Value, Value) {
    let started = start_turn(server, conv, body).await;
    let turn = wait_turn(server, conv, started["turnId"].as_str().unwrap()).await;
    (started, turn)
}

pub async fn messages(server: &TestServer, conv: &str) -> Vec<Value> {
    get(server, &format!("/v1/conversations/{conv}/messages")).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

pub async fn history(server: &TestServer, conv: &str) -> Vec<Value> {
    let h = get(server, &format!("/v1/conversations/{conv}/model-history")).await;
    assert_eq!(h["conversationId"], conv);
    h["data"].as_array().unwrap().clone()
}

// ------------------------------------------------------------------ SSE

/// One SSE event as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

impl Ev {
    /// A persisted event: it has a `seq` (its id is `seq`, or
    /// `seq.turnSeq.index` inside a running turn).
    pub fn persisted(&self) -> bool {
        self.id.is_some() && self.data.get("seq").is_some()
    }
    pub fn transient(&self) -> bool {
        self.id.is_some() && !self.persisted()
    }
    pub fn seq(&self) -> i64 {
        self.data["seq"].as_i64().expect("seq")
    }
}

/// An open SSE response, parsed incrementally.
pub struct Sse {
    response: reqwest::Response,
    buf: String,
    ended: bool,
}

impl Sse {
    pub fn new(response: reqwest::Response) -> Sse {
        assert_eq!(response.status(), 200, "SSE status");
        let ct = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(ct.starts_with("text/event-stream"), "content type {ct}");
        Sse {
            response,
            buf: String::new(),
            ended: false,
        }
    }

    /// `GET /events`, resuming from `last_id` if given.
    pub async fn open(server: &TestServer, conv: &str, last_id: Option<&str>) -> Sse {
        let mut request = server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/events")));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        Sse::new(request.send().await.expect("open events"))
    }

    /// The next event (keep-alive comments skipped); `None` at the end of
    /// the body. Panics after [`LIMIT`].
    pub async fn next(&mut self) -> Option<Ev> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut ev = Ev {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut data = String::new();
                let mut any = false;
                for line in frame.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => ev.id = Some(value.to_owned()),
                        "event" => ev.event = value.to_owned(),
                        "data" => {
                            if !data.is_empty() {
                                data.push('\n');
                            }
                            data.push_str(value);
                        }
                        other => panic!("unexpected SSE field {other:?} in {frame:?}"),
                    }
                }
                if !any {
                    continue;
                }
                ev.data = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is JSON ({e}): {data:?}"));
                return Some(ev);
            }
            if self.ended {
                assert!(
                    self.buf.trim().is_empty(),
                    "trailing SSE bytes {:?}",
                    self.buf
                );
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => panic!("no SSE event within {LIMIT:?}; buffered {:?}", self.buf),
                Ok(Ok(Some(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(Ok(None)) => self.ended = true,
                Ok(Err(e)) => panic!("SSE body failed: {e}"),
            }
        }
    }

    pub async fn next_some(&mut self) -> Ev {
        self.next().await.expect("SSE stream ended early")
    }

    /// Events up to and including the first that matches `stop`.
    pub async fn until(&mut self, stop: impl Fn(&Ev) -> bool) -> Vec<Ev> {
        let mut out = Vec::new();
        loop {
            let ev = self.next_some().await;
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
    }

    /// Events before the `caught-up` marker (the marker is checked, not returned).
    pub async fn replay(&mut self) -> Vec<Ev> {
        let mut out = self.until(|e| e.event == "caught-up").await;
        let marker = out.pop().unwrap();
        assert_eq!(marker.id, None, "caught-up has no id");
        let last = out.iter().rev().find(|e| e.persisted()).map(Ev::seq);
        if let Some(last) = last {
            assert_eq!(marker.data["lastSeq"], last, "{marker:?}");
        }
        out
    }
}

pub fn ends_turn(e: &Ev, turn_id: &str) -> bool {
    matches!(
        e.event.as_str(),
        "turn.completed" | "turn.failed" | "turn.cancelled" | "turn.interrupted"
    ) && e.data["turnId"] == turn_id
}

pub fn delta_text(events: &[Ev]) -> String {
    events
        .iter()
        .filter(|e| e.event == "text.delta")
        .map(|e| e.data["delta"].as_str().expect("delta text"))
        .collect()
}

pub fn assistant_text(events: &[Ev]) -> String {
    let msg = events
        .iter()
        .find(|e| e.event == "message.assistant")
        .expect("message.assistant");
    msg.data["parts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] == "text")
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

/// Every event of the conversation's log, via a fresh replay.
pub async fn log(server: &TestServer, conv: &str) -> Vec<Ev> {
    let mut sse = Sse::open(server, conv, None).await;
    let events = sse.replay().await;
    assert!(events.iter().all(Ev::persisted), "no live turn: {events:?}");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq(), i as i64 + 1, "seq gap-free: {events:#?}");
        assert_eq!(e.id.as_deref(), Some((i + 1).to_string().as_str()));
        assert_eq!(e.data["type"], e.event);
        assert_eq!(e.data["conversationId"], conv);
    }
    events
}

/// What [`read_with_drops`] needs of a [`TestServer`] (which is not `Clone`).
pub struct Shim {
    pub base_url: String,
    pub http: reqwest::Client,
}

/// Reads one turn through a subscriber that drops its connection after
/// `drops[i]` events on its i-th connection (then reads to the end) and
/// resumes with the last id it saw; returns the joined events.
pub async fn read_with_drops(
    shim: &Shim,
    conv: &str,
    from: &str,
    turn_id_of: &tokio::sync::watch::Receiver<Option<String>>,
    drops: &[usize],
) -> Vec<Ev> {
    let mut joined: Vec<Ev> = Vec::new();
    let mut last_id = from.to_owned();
    let mut drops = drops.iter().copied();
    loop {
        let response = shim
            .http
            .get(format!("{}/v1/conversations/{conv}/events", shim.base_url))
            .header("last-event-id", &last_id)
            .send()
            .await
            .expect("open events");
        let mut sse = Sse::new(response);
        let limit = drops.next();
        let mut read = 0;
        let mut markers = 0;
        loop {
            let ev = sse.next_some().await;
            if ev.event == "caught-up" {
                markers += 1;
                assert_eq!(markers, 1, "one caught-up per connection");
                continue;
            }
            if let Some(id) = &ev.id {
                last_id = id.clone();
            }
            read += 1;
            let done = turn_id_of
                .borrow()
                .as_deref()
                .is_some_and(|t| ends_turn(&ev, t));
            joined.push(ev);
            if done {
                return joined;
            }
            if limit == Some(read) {
                break;
            }
        }
    }
}
