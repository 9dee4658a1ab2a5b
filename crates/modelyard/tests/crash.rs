//! Crash and shutdown recovery of conversation turns, with the real
//! `modelyard serve` binary as a child process in front of an in-process
//! mock upstream: a SIGKILL mid-turn, then a restart on the same database,
//! closes the turn `interrupted` with its checkpointed text and loses or
//! repeats no committed event; a SIGTERM mid-turn does the same cleanly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use modelyard_testkit::MockUpstream;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Bound of every wait.
const LIMIT: Duration = Duration::from_secs(20);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn long_text(words: usize) -> String {
    (0..words)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A data directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "modelyard-crash-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `modelyard serve` child process; killed on drop.
struct Server {
    child: Child,
    base_url: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts the binary on `dir`'s database (a fresh port each time) and
    /// waits until it answers `/health`.
    async fn start(dir: &Dir, mock: &MockUpstream) -> Server {
        let port = free_port();
        let config = dir.0.join("modelyard.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[storage]\nurl = \"sqlite://{db}\"\n\
                 data_dir = \"{data}\"\n\n[[providers]]\nname = \"mock\"\nkind = \"openai\"\n\
                 base_url = \"{mock}\"\n",
                db = dir.0.join("crash.db").display(),
                data = dir.0.display(),
                mock = mock.base_url(),
            ),
        )
        .unwrap();
        // The server's log, kept in the data directory (appended across restarts).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("server.log"))
            .unwrap();
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
        };
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("modelyard serve exited early: {status}");
            }
            if let Ok(r) = server.http.get(server.url("/health")).send().await {
                if r.status() == 200 {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "modelyard did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn events(&self, conv: &str) -> Sse {
        let response = self
            .http
            .get(self.url(&format!("/v1/conversations/{conv}/events")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buf: String::new(),
        }
    }

    /// Every persisted event of the conversation (replay from the start),
    /// checking seq is 1..n without gaps.
    async fn log(&self, conv: &str) -> Vec<Ev> {
        let mut sse = self.events(conv).await;
        let mut out = Vec::new();
        loop {
            let ev = sse.next().await.expect("replay ends with caught-up");
            if ev.event == "caught-up" {
                break;
            }
            out.push(ev);
        }
        for (i, e) in out.iter().enumerate() {
            assert_eq!(
                e.id.as_deref(),
                Some((i + 1).to_string().as_str()),
                "{out:#?}"
            );
            assert_eq!(e.data["seq"], i as i64 + 1);
        }
        out
    }

    async fn wait_turn(&self, conv: &str, turn_id: &str) -> Value {
        let deadline = Instant::now() + LIMIT;
        loop {
            let turns = self.get(&format!("/v1/conversations/{conv}/turns")).await;
            let turn = turns["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == turn_id)
                .cloned()
                .expect("turn listed");
            if turn["status"] != "running" {
                return turn;
            }
            assert!(Instant::now() < deadline, "turn still running: {turn}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the process to exit; its exit status.
    async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "modelyard did not exit");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: Option<String>,
    event: String,
    data: Value,
}

struct Sse {
    response: reqwest::Response,
    buf: String,
}

impl Sse {
    /// The next event; `None` when the stream ended (or broke).
    async fn next(&mut self) -> Option<Ev> {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut ev = Ev {
                    id: None,
                    event: "message".into(),
                    data: Value::Null,
                };
                let mut any = false;
                for line in frame
                    .lines()
                    .filter(|l| !l.is_empty() && !l.starts_with(':'))
                {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    any = true;
                    match field {
                        "id" => ev.id = Some(value.to_owned()),
                        "event" => ev.event = value.to_owned(),
                        "data" => ev.data = serde_json::from_str(value).expect("JSON data"),
                        _ => {}
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.response.chunk()).await {
                Err(_) => panic!("no SSE event within {LIMIT:?}"),
                Ok(Ok(Some(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
            }
        }
    }
}

fn persisted(e: &Ev) -> bool {
    e.id.as_deref().is_some_and(|id| !id.contains('.'))
}

/// Creates a conversation, starts a long turn on `slow:300` with a
/// subscriber, and reads until several deltas arrived and more than 600 ms
/// (a checkpoint) passed. Returns (conversation, turn, events seen, subscriber).
async fn turn_under_way(server: &Server) -> (String, String, Vec<Ev>, Sse) {
    let (status, c) = server
        .send(
            reqwest::Method::POST,
            "/v1/conversations",
            Some(json!({"title": "crash", "model": "mock/slow:300"})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let conv = c["id"].as_str().unwrap().to_owned();
    let mut sse = server.events(&conv).await;
    let mut seen = Vec::new();
    loop {
        let ev = sse.next().await.expect("replay");
        if ev.event == "caught-up" {
            break;
        }
        seen.push(ev);
    }
    let started_at = Instant::now();
    let (status, turn) = server
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": long_text(80)})),
        )
        .await;
    assert_eq!(status, 202, "{turn}");
    let turn_id = turn["turnId"].as_str().unwrap().to_owned();
    loop {
        let ev = sse.next().await.expect("turn events");
        assert!(
            !ev.event.starts_with("turn.") || ev.event == "turn.started",
            "{ev:?}"
        );
        seen.push(ev);
        let deltas = seen.iter().filter(|e| e.event == "text.delta").count();
        if deltas >= 3 && started_at.elapsed() > Duration::from_millis(600) {
            break;
        }
    }
    (conv, turn_id, seen, sse)
}

fn streamed_text(events: &[Ev]) -> String {
    events
        .iter()
        .filter(|e| e.event == "text.delta")
        .map(|e| e.data["delta"].as_str().unwrap())
        .collect()
}

/// After a restart: every event seen before the stop is still there with
/// the same seq and payload, none repeated, and the turn ends with
/// `turn.interrupted` whose partial text is a non-empty prefix of what
/// streamed. Returns the interrupted event's `partialText`.
async fn check_recovered(server: &Server, conv: &str, turn_id: &str, seen: &[Ev]) -> String {
    let turn = server.wait_turn(conv, turn_id).await;
    assert_eq!(turn["status"], "interrupted", "{turn}");
    let c = server.get(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "idle", "{c}");
    let log = server.log(conv).await;
    let before: Vec<&Ev> = seen.iter().filter(|e| persisted(e)).collect();
    assert!(before.len() >= 3, "{before:#?}");
    for e in &before {
        let seq = e.data["seq"].as_i64().unwrap() as usize;
        assert_eq!(&&log[seq - 1], e, "event {seq} unchanged after the restart");
    }
    let interrupted: Vec<&Ev> = log
        .iter()
        .filter(|e| e.event == "turn.interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{log:#?}");
    assert_eq!(interrupted[0].data["turnId"], turn_id);
    assert_eq!(
        log.last().unwrap(),
        interrupted[0],
        "the turn's end is last"
    );
    let partial = interrupted[0].data["partialText"]
        .as_str()
        .expect("partialText")
        .to_owned();
    let streamed = streamed_text(seen);
    assert!(!partial.is_empty(), "a checkpoint was taken");
    assert!(
        streamed.starts_with(&partial) || partial.starts_with(&streamed),
        "partial text {partial:?} vs streamed {streamed:?}"
    );
    assert!(partial.starts_with("echo: w0"), "{partial:?}");
    partial
}

/// A new turn after the restart works.
async fn new_turn_works(server: &Server, conv: &str) {
    let (status, turn) = server
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": "are you back", "model": "mock/echo"})),
        )
        .await;
    assert_eq!(status, 202, "{turn}");
    let turn = server
        .wait_turn(conv, turn["turnId"].as_str().unwrap())
        .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let messages = server
        .get(&format!("/v1/conversations/{conv}/messages"))
        .await;
    let last = messages["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"], "echo: are you back", "{messages}");
    server.log(conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_turn_then_restart_closes_the_turn_interrupted() {
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["slow:300".into(), "echo".into()]));
    let dir = Dir::new("kill");
    let mut server = Server::start(&dir, &mock).await;
    let (conv, turn_id, seen, sse) = turn_under_way(&server).await;

    server.child.kill().expect("SIGKILL");
    server.wait_exit().await;
    drop(sse);
    assert!(
        mock.wait_cancelled(1, LIMIT).await,
        "the upstream stream died with the process"
    );
    drop(server);

    let server = Server::start(&dir, &mock).await;
    let partial = check_recovered(&server, &conv, &turn_id, &seen).await;
    assert!(
        streamed_text(&seen).starts_with(&partial),
        "a checkpoint holds no more than what streamed"
    );
    // Nothing was appended for the turn but its end: no assistant message.
    let messages = server
        .get(&format!("/v1/conversations/{conv}/messages"))
        .await;
    let roles: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user"], "{messages}");
    new_turn_works(&server, &conv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_turn_shuts_down_cleanly_and_restart_shows_interrupted() {
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["slow:300".into(), "echo".into()]));
    let dir = Dir::new("term");
    let mut server = Server::start(&dir, &mock).await;
    // The subscriber stays connected through the shutdown.
    let (conv, turn_id, mut seen, mut sse) = turn_under_way(&server).await;

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(server.child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
    let exit = server.wait_exit().await;
    assert!(exit.success(), "clean exit: {exit}");
    // The open events stream ends (after the turn's end, if it got there).
    while let Some(ev) = sse.next().await {
        seen.push(ev);
    }
    drop(server);

    let server = Server::start(&dir, &mock).await;
    let partial = check_recovered(&server, &conv, &turn_id, &seen).await;
    // A clean stop keeps the partial answer as a message too.
    let messages = server
        .get(&format!("/v1/conversations/{conv}/messages"))
        .await;
    let data = messages["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{messages}");
    assert_eq!(data[1]["role"], "assistant");
    assert_eq!(data[1]["content"], partial.as_str());
    new_turn_works(&server, &conv).await;
}
