//! The harness of the binary's tests: a `modelyard serve` child process
//! on a temp data directory in front of an in-process mock upstream, a
//! small SSE reader, and the checks every recovery test makes.

// Each test binary uses its own subset of the harness.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use modelyard_testkit::{eventually, MockUpstream};
use serde_json::Value;
use tokio::time::Instant;

/// Bound of every wait.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn long_text(words: usize) -> String {
    (0..words)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A data directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "modelyard-crash-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Dir {
    /// The SQLite database file of servers started on this directory.
    pub fn db(&self) -> PathBuf {
        self.0.join("crash.db")
    }
}

/// How [`Server::start_with`] configures the server.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `[storage] url`; default a SQLite file in the directory.
    pub storage_url: Option<String>,
    /// More `[server]` lines.
    pub server: String,
    /// More config text (whole sections) after the provider.
    pub extra: String,
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `modelyard serve` child process; killed on drop.
pub struct Server {
    pub child: Child,
    pub base_url: String,
    pub http: reqwest::Client,
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
    pub async fn start(dir: &Dir, mock: &MockUpstream) -> Server {
        Self::start_with(dir, mock, &Options::default()).await
    }

    /// [`Server::start`] with a storage URL and extra config text.
    pub async fn start_with(dir: &Dir, mock: &MockUpstream, options: &Options) -> Server {
        let port = free_port();
        let config = dir.0.join("modelyard.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n{server}\n[storage]\nurl = \"{url}\"\n\
                 data_dir = \"{data}\"\n\n[[providers]]\nname = \"mock\"\nkind = \"openai\"\n\
                 base_url = \"{mock}\"\n\n{extra}\n",
                server = options.server,
                url = options
                    .storage_url
                    .clone()
                    .unwrap_or_else(|| format!("sqlite://{}", dir.db().display())),
                data = dir.0.display(),
                mock = mock.base_url(),
                extra = options.extra,
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
        eventually(LIMIT, "modelyard becomes healthy", || {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("modelyard serve exited early: {status}");
            }
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

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// GET `path` until it answers 200: for what the call log holds,
    /// which is written behind the answer (within the recorder's linger).
    pub async fn get_recorded(&self, path: &str) -> Value {
        eventually(Duration::from_secs(10), path, || async {
            match self.send(reqwest::Method::GET, path, None).await {
                (200, body) => Ok(body),
                (status, body) => Err(format!("{status}: {body}")),
            }
        })
        .await
    }

    pub async fn events(&self, conv: &str) -> Sse {
        self.events_after(conv, None).await
    }

    /// The events feed, resumed after `last_event_id` (`Last-Event-ID`).
    pub async fn events_after(&self, conv: &str, last_event_id: Option<&str>) -> Sse {
        let mut request = self
            .http
            .get(self.url(&format!("/v1/conversations/{conv}/events")));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buf: String::new(),
        }
    }

    /// Every persisted event of the conversation (replay from the start),
    /// checking seq is 1..n without gaps.
    pub async fn log(&self, conv: &str) -> Vec<Ev> {
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

    pub async fn wait_turn(&self, conv: &str, turn_id: &str) -> Value {
        eventually(LIMIT, "turn not running", || async move {
            let turns = self.get(&format!("/v1/conversations/{conv}/turns")).await;
            let turn = turns["data"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["id"] == turn_id)
                .cloned()
                .expect("turn listed");
            if turn["status"] != "running" {
                Ok(turn)
            } else {
                Err(turn)
            }
        })
        .await
    }

    /// Waits for the process to exit; its exit status.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = &mut self.child;
        eventually(LIMIT, "modelyard exits", || {
            std::future::ready(child.try_wait().unwrap())
        })
        .await
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ev {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub struct Sse {
    pub response: reqwest::Response,
    pub buf: String,
}

impl Sse {
    /// The next event; `None` when the stream ended (or broke).
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

pub fn persisted(e: &Ev) -> bool {
    e.id.as_deref().is_some_and(|id| !id.contains('.'))
}

/// Checks the database at `url` after the servers stopped (or while one
/// runs): every conversation of the default project has a gap-free `seq`
/// from 1, tables equal to the fold of its log, and no turn left `running`;
/// a SQLite file passes `PRAGMA integrity_check`. Returns the number of
/// conversations checked.
pub async fn assert_store_consistent(url: &str) -> usize {
    use modelyard_core::conversation::{fold, TurnStatus};
    use modelyard_store::{ConversationFilter, ProjectId, Store};
    let store = Store::connect(url).await.expect("open the store");
    let project = ProjectId::default_project();
    let mut checked = 0;
    let mut before = None;
    loop {
        let page = store
            .list_conversations(
                &project,
                &ConversationFilter {
                    include_deleted: true,
                    limit: 200,
                    before: before.clone(),
                    ..ConversationFilter::default()
                },
            )
            .await
            .expect("list conversations");
        let Some(last) = page.last() else { break };
        before = Some((last.updated_at_ms, last.id.clone()));
        for c in &page {
            let events = store
                .events_after(&project, &c.id, 0, 10_000)
                .await
                .expect("events");
            let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(
                seqs,
                (1..=events.len() as i64).collect::<Vec<_>>(),
                "seq of {} is gap-free",
                c.id
            );
            let (conversation, turns, messages) = fold(&events).expect("fold");
            let stored = store.get_conversation(&project, &c.id).await.expect("get");
            assert_eq!(stored, conversation, "conversation row = fold");
            assert_eq!(
                store.list_turns(&project, &c.id).await.expect("turns"),
                turns,
                "turn rows = fold"
            );
            assert_eq!(
                store
                    .list_messages(&project, &c.id)
                    .await
                    .expect("messages"),
                messages,
                "message rows = fold"
            );
            assert!(
                turns.iter().all(|t| t.status != TurnStatus::Running),
                "no turn of {} left running: {turns:#?}",
                c.id
            );
            assert_eq!(c.running_turn_id, None, "{} is idle", c.id);
            checked += 1;
        }
    }
    store.close().await;
    if let Some(path) = url.strip_prefix("sqlite://") {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
            .await
            .expect("open sqlite");
        let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut conn)
            .await
            .expect("integrity_check");
        assert_eq!(ok, "ok", "PRAGMA integrity_check");
        let _ = conn.close().await;
    }
    checked
}

/// Creates a conversation on `model`; its id.
pub async fn create_conversation(server: &Server, model: &str) -> String {
    let (status, c) = server
        .send(
            reqwest::Method::POST,
            "/v1/conversations",
            Some(serde_json::json!({"title": "t", "model": model})),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

/// Starts a turn; its id.
pub async fn start_turn(server: &Server, conv: &str, content: &str, model: Option<&str>) -> String {
    let mut body = serde_json::json!({"content": content});
    if let Some(model) = model {
        body["model"] = model.into();
    }
    let (status, turn) = server
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns"),
            Some(body),
        )
        .await;
    assert_eq!(status, 202, "{turn}");
    turn["turnId"].as_str().unwrap().to_owned()
}

/// The conversation is usable: a new turn completes, and a slow one can be
/// cancelled.
pub async fn conversation_usable(server: &Server, conv: &str) {
    let turn = start_turn(server, conv, "are you back", Some("mock/echo")).await;
    let turn = server.wait_turn(conv, &turn).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let turn_id = start_turn(server, conv, &long_text(50), Some("mock/slow:200")).await;
    let (status, body) = server
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let turn = server.wait_turn(conv, &turn_id).await;
    assert_eq!(turn["status"], "cancelled", "{turn}");
}
