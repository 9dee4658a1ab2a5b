//! Shared setup of the server's integration tests: a real Modelyard server
//! (`modelyard_server::start` on `127.0.0.1:0`, a fresh SQLite file in a
//! temporary directory) in front of an in-process [`MockUpstream`].

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

pub mod conv;
pub mod ui_page;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use modelyard_server::{Config, RunningServer};
use modelyard_testkit::{eventually, MockOptions, MockUpstream};
use serde_json::Value;

/// Placeholder in provider TOML replaced by the mock's base URL.
pub const MOCK_URL: &str = "{mock}";

/// Placeholder of a named mock ([`Builder::mock`]): `{mock:NAME}`.
pub fn named_mock_url(name: &str) -> String {
    format!("{{mock:{name}}}")
}

/// How long [`TestServer::wait_calls`] polls before giving up.
pub const WAIT_LIMIT: Duration = Duration::from_secs(5);

/// The default provider section: one `openai` provider named `mock`.
pub const MOCK_PROVIDER: &str = r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"
"#;

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, unique directory.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "modelyard-server-test-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Configures a [`TestServer`] before it starts.
#[derive(Debug)]
pub struct Builder {
    providers: String,
    server: String,
    storage: String,
    extra: String,
    env: Vec<(String, String)>,
    listed: Option<Vec<String>>,
    call_log: bool,
    dir: Option<TempDir>,
    mocks: Vec<(String, MockOptions)>,
    storage_url: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            providers: MOCK_PROVIDER.to_owned(),
            server: String::new(),
            storage: String::new(),
            extra: String::new(),
            env: Vec::new(),
            listed: None,
            call_log: true,
            dir: None,
            mocks: Vec::new(),
            storage_url: None,
        }
    }
}

impl Builder {
    /// Replaces the `[[providers]]` section; `{mock}` becomes the mock's URL.
    pub fn providers(mut self, toml: &str) -> Self {
        self.providers = toml.to_owned();
        self
    }

    /// Extra keys of the `[server]` table (`listen` is always `127.0.0.1:0`).
    pub fn server(mut self, toml: &str) -> Self {
        self.server = toml.to_owned();
        self
    }

    /// Extra keys of the `[storage]` table (`url`, `data_dir` and `call_log`
    /// are always set).
    pub fn storage(mut self, toml: &str) -> Self {
        self.storage = toml.to_owned();
        self
    }

    /// The environment the server sees (for `api_key_env`); nothing else is set.
    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self
    }

    /// TOML appended after the providers (for example `[defaults]`).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra = toml.to_owned();
        self
    }

    /// What the mock's `GET /v1/models` lists (set before discovery runs).
    pub fn listed(mut self, ids: &[&str]) -> Self {
        self.listed = Some(ids.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    /// `[storage] call_log`.
    pub fn call_log(mut self, on: bool) -> Self {
        self.call_log = on;
        self
    }

    /// Another database than the data directory's SQLite file (a
    /// PostgreSQL URL shared by replicas).
    pub fn storage_url(mut self, url: &str) -> Self {
        self.storage_url = Some(url.to_owned());
        self
    }

    /// Reuses a data directory (and so its database).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// Adds a named mock upstream started with `options`; `{mock:NAME}` in
    /// the provider TOML (and [`Builder::extra`]) becomes its base URL, and
    /// [`TestServer::named`] returns it.
    pub fn mock(mut self, name: &str, options: MockOptions) -> Self {
        self.mocks.push((name.to_owned(), options));
        self
    }

    /// Starts the mocks, then the server.
    pub async fn start(self) -> TestServer {
        let mock = MockUpstream::start().await;
        mock.set_listed_models(self.listed.clone());
        let mut providers = self.providers.clone();
        let mut extra = self.extra.clone();
        let mut mocks = Vec::with_capacity(self.mocks.len());
        for (name, options) in self.mocks {
            let named = MockUpstream::start_with(options).await;
            let placeholder = named_mock_url(&name);
            providers = providers.replace(&placeholder, &named.base_url());
            extra = extra.replace(&placeholder, &named.base_url());
            mocks.push((name, named));
        }
        let dir = self.dir.unwrap_or_default();
        let db = self
            .storage_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("modelyard.db").display()));
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[storage]\nurl = \"{db}\"\ndata_dir = \"{data}\"\ncall_log = {call_log}\n{storage}\n\n{providers}\n{extra}\n",
            data = dir.path().display(),
            server = self.server,
            call_log = self.call_log,
            storage = self.storage,
            providers = providers.replace(MOCK_URL, &mock.base_url()),
            extra = extra,
        );
        let vars = self.env;
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let config = Config::from_toml(&toml, "<test>", None, &env)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{toml}"));
        let server = modelyard_server::start(config, &env)
            .await
            .expect("server starts");
        let http = reqwest::Client::builder()
            .build()
            .expect("build HTTP client");
        TestServer {
            base_url: server.base_url(),
            mock,
            mocks,
            http,
            server: Some(server),
            dir: Some(dir),
        }
    }
}

/// A running server with its mock upstream.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:<port>` of the gateway.
    pub base_url: String,
    /// The mock upstream the `mock` provider points at.
    pub mock: MockUpstream,
    /// The named mocks of [`Builder::mock`], in the order they were added.
    pub mocks: Vec<(String, MockUpstream)>,
    /// A plain client for requests to the gateway.
    pub http: reqwest::Client,
    server: Option<RunningServer>,
    dir: Option<TempDir>,
}

impl TestServer {
    /// A server with the default `mock` provider.
    pub async fn start() -> Self {
        Builder::default().start().await
    }

    /// A builder for anything else.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The named mock `name` ([`Builder::mock`]).
    pub fn named(&self, name: &str) -> &MockUpstream {
        self.mocks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("no mock named {name:?}"))
    }

    /// The server's database URL (its SQLite file).
    pub fn db_url(&self) -> String {
        let dir = self.dir.as_ref().expect("the server has its directory");
        format!("sqlite://{}", dir.path().join("modelyard.db").display())
    }

    /// The metrics listener's address (`[telemetry] metrics_listen`).
    #[allow(dead_code)]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.server.as_ref().and_then(|s| s.metrics_addr())
    }

    /// `base_url + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// `POST /v1/chat/completions` with `body` sent as is.
    pub async fn chat_raw(&self, body: impl Into<Bytes>) -> reqwest::Response {
        let body: Bytes = body.into();
        self.http
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send chat request")
    }

    /// `POST /v1/chat/completions` with a JSON body.
    pub async fn chat(&self, body: &Value) -> reqwest::Response {
        self.chat_raw(serde_json::to_vec(body).unwrap()).await
    }

    /// Sends `body` straight to the mock's chat endpoint; returns status and
    /// raw body (used to see what the upstream itself answers).
    pub async fn mock_chat_raw(&self, body: impl Into<Bytes>) -> (u16, Bytes) {
        let body: Bytes = body.into();
        let response = self
            .http
            .post(format!("{}/v1/chat/completions", self.mock.base_url()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send to mock");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("mock body"))
    }

    /// `GET path` as JSON, asserting 200.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("GET request");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "GET {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
    }

    /// The first page (up to 500) of recorded calls, newest first.
    pub async fn calls(&self) -> Vec<Value> {
        let page = self.get_json("/v1/calls?limit=500").await;
        page["data"].as_array().cloned().expect("`data` array")
    }

    /// Polls `GET /v1/calls` for up to [`WAIT_LIMIT`] until at least `n`
    /// call records exist; returns them, newest first.
    pub async fn wait_calls(&self, n: usize) -> Vec<Value> {
        eventually(
            WAIT_LIMIT,
            &format!("at least {n} call records"),
            || async move {
                let calls = self.calls().await;
                if calls.len() >= n {
                    Ok(calls)
                } else {
                    Err(calls)
                }
            },
        )
        .await
    }

    /// `GET /v1/calls/{id}`: the full record.
    pub async fn call(&self, id: &str) -> Value {
        self.get_json(&format!("/v1/calls/{id}")).await
    }

    /// Waits for exactly one record and returns its full view.
    pub async fn only_call(&self) -> Value {
        let calls = self.wait_calls(1).await;
        assert_eq!(calls.len(), 1, "one call recorded: {calls:#?}");
        self.call(calls[0]["id"].as_str().expect("call id")).await
    }

    // ------------------------------------------------------------ typed client
    //
    // The requests the tests repeat, written once (see [`conv`] for the
    // checks each makes). Error answers must be problem documents.

    /// `method path` with an optional JSON body: status and JSON body (`null`
    /// when empty). A status of 400 or more must be a problem document with a
    /// `code` ([`conv::send`]).
    pub async fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        conv::send(self, method, path, body).await
    }

    /// `GET path`, asserting 200 (problem-checked like [`TestServer::send`]).
    pub async fn get_ok(&self, path: &str) -> Value {
        conv::get(self, path).await
    }

    /// `POST path` with `body`.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("POST", path, Some(body)).await
    }

    /// `PATCH path` with `body`.
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.send("PATCH", path, Some(body)).await
    }

    /// Sends `method path` and asserts a problem with `status` and `code`;
    /// returns the problem.
    pub async fn problem(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        status: u16,
        code: &str,
    ) -> Value {
        let (got, problem) = self.send(method, path, body).await;
        assert_eq!(got, status, "{method} {path}: {problem}");
        assert_eq!(problem["code"], code, "{method} {path}: {problem}");
        problem
    }

    /// `POST /v1/conversations`, asserting 201; the new id.
    pub async fn create_conversation(&self, body: Value) -> String {
        conv::create(self, body).await
    }

    /// `POST /v1/conversations/{conv}/turns`, asserting 202; the started turn.
    pub async fn start_turn(&self, conv: &str, body: Value) -> Value {
        conv::start_turn(self, conv, body).await
    }

    /// Waits until the turn is no longer running; the turn.
    pub async fn wait_turn(&self, conv: &str, turn_id: &str) -> Value {
        conv::wait_turn(self, conv, turn_id).await
    }

    /// Starts a turn and waits for its end: (started, ended).
    pub async fn run_turn(&self, conv: &str, body: Value) -> (Value, Value) {
        conv::run_turn(self, conv, body).await
    }

    /// The conversation's messages.
    pub async fn messages(&self, conv: &str) -> Vec<Value> {
        conv::messages(self, conv).await
    }

    /// Opens `GET /v1/conversations/{conv}/events`, resuming after `last_id`.
    pub async fn events(&self, conv: &str, last_id: Option<&str>) -> conv::Sse {
        conv::Sse::open(self, conv, last_id).await
    }

    /// The JSON bodies of the chat completions the `mock` upstream received,
    /// oldest first.
    pub fn mock_chats(&self) -> Vec<Value> {
        self.mock
            .requests()
            .iter()
            .filter(|r| r.path == "/v1/chat/completions")
            .map(|r| r.json().expect("JSON request"))
            .collect()
    }

    /// Stops the server (flushing the call log) and returns its data
    /// directory, which stays on disk until the returned value is dropped.
    pub async fn shutdown(mut self) -> TempDir {
        // Drop our pooled connections first so graceful shutdown has nothing to wait for.
        self.http = reqwest::Client::new();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server.shutdown())
                .await
                .expect("server shuts down within 10 s");
        }
        self.dir.take().expect("data dir")
    }
}

/// The `data:` payloads of a complete SSE body, asserting every event is
/// exactly `data: <payload>\n\n`.
pub fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.is_empty() || body.ends_with("\n\n"),
        "SSE body ends with a blank line: {body:?}"
    );
    body.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("event is `data: ...`: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// A chat request body for `model` with one user message.
pub fn chat_body(model: &str, stream: bool) -> Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello brave new world"}],
        "stream": stream,
    })
}

/// Asserts `body` is an OpenAI error envelope and returns its `error` object.
pub fn error_envelope(body: &Value) -> &serde_json::Map<String, Value> {
    let error = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("OpenAI error envelope: {body}"));
    for key in ["message", "type", "param", "code"] {
        assert!(error.contains_key(key), "envelope has `{key}`: {body}");
    }
    assert!(error["message"].is_string(), "message is text: {body}");
    assert!(error["type"].is_string(), "type is text: {body}");
    error
}
