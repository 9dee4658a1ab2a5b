//! Canary test: unique fake credentials — a provider key (read from the
//! environment), client API keys (a valid one and a wrong one) — and a
//! secret-shaped string in a prompt go through a broad run of the API (chat
//! completions streamed and not, an upstream that echoes the credential it
//! got, failing upstreams, conversations with the advisor and client tools,
//! title, calls, sessions, keys). Then the database files, every log and
//! trace line (TRACE level, all targets) and every response body are searched:
//! the credentials appear nowhere (except the one answer that creates the
//! client key, which shows it once), and with `redact_secrets` the prompt's
//! secret is not stored.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};
use tokio::time::Instant;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Client<'a> {
    server: &'a TestServer,
    key: String,
    bodies: Vec<String>,
}

impl Client<'_> {
    async fn send(&mut self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        self.send_as(&self.key.clone(), method, path, body).await
    }

    async fn send_as(
        &mut self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .server
            .http
            .request(method, self.server.url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let mut text = String::new();
        for (name, value) in response.headers() {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("")));
        }
        text.push_str(&response.text().await.unwrap());
        self.bodies.push(text.clone());
        (status, text)
    }
}

#[tokio::test]
async fn credentials_appear_in_no_database_log_trace_or_response() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber of this test binary");

    let provider_key = format!("sk-canaryprovider{}", uuid::Uuid::now_v7().simple());
    let prompt_secret = format!("sk-canaryprompt{}", uuid::Uuid::now_v7().simple());
    let wrong_key = format!("mk_canarywrong{}", uuid::Uuid::now_v7().simple());
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n\
             api_key_env = \"CANARY_PROVIDER_KEY\"\n",
        )
        .env(&[("CANARY_PROVIDER_KEY", provider_key.as_str())])
        .listed(&[
            "echo",
            "mock-model",
            "slow:5",
            "tool-call:advisor",
            "tool-call:get_weather",
            "status:500",
            "leak-auth",
            "malformed",
        ])
        .extra("[defaults]\nmodel = \"mock/echo\"\n[security]\nredact_secrets = true\n")
        .start()
        .await;

    // The first key, created in open mode: this one answer shows it.
    let created: Value = server
        .http
        .post(server.url("/v1/keys"))
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let client_key = created["key"].as_str().unwrap().to_owned();
    let mut c = Client {
        server: &server,
        key: client_key.clone(),
        bodies: Vec::new(),
    };

    // Gateway: plain, streamed, an echoing upstream, failures.
    let chat = |model: &str, stream: bool, text: &str| {
        json!({"model": model, "stream": stream,
               "messages": [{"role": "user", "content": text}]})
    };
    for stream in [false, true] {
        let (status, _) = c
            .send(
                "POST",
                "/v1/chat/completions",
                Some(chat("mock/echo", stream, "hello there")),
            )
            .await;
        assert_eq!(status, 200);
        let (status, body) = c
            .send(
                "POST",
                "/v1/chat/completions",
                Some(chat("mock/leak-auth", stream, "hi")),
            )
            .await;
        // An upstream 401 is the provider's credential problem: 502
        // `upstream_auth_error`, never the client's 401.
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("upstream_auth_error"), "{body}");
        assert!(
            body.contains("[REDACTED]"),
            "the echoed credential is scrubbed: {body}"
        );
        c.send(
            "POST",
            "/v1/chat/completions",
            Some(chat("mock/status:500", stream, "hi")),
        )
        .await;
        c.send(
            "POST",
            "/v1/chat/completions",
            Some(chat("mock/malformed", stream, "hi")),
        )
        .await;
    }
    // Wrong and missing client keys.
    for _ in 0..2 {
        let (status, _) = c
            .send_as(&wrong_key, "GET", "/v1/conversations", None)
            .await;
        assert_eq!(status, 401);
    }

    // Conversations: a prompt with a secret, the advisor, client tools, title.
    let (_, conv) = c
        .send("POST", "/v1/conversations", Some(json!({"advisor": true})))
        .await;
    let conv: Value = serde_json::from_str(conv.lines().last().unwrap()).unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let turns = [
        json!({"content": format!("remember {prompt_secret} please"), "model": "mock/echo"}),
        json!({"content": "ask the advisor", "model": "mock/tool-call:advisor"}),
        json!({"content": "and the leaky one", "model": "mock/leak-auth"}),
    ];
    for body in turns {
        let (status, started) = c
            .send(
                "POST",
                &format!("/v1/conversations/{conv}/turns"),
                Some(body),
            )
            .await;
        assert_eq!(status, 202, "{started}");
        wait_idle(&mut c, &conv).await;
    }
    let (status, _) = c
        .send(
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(
                json!({"content": "weather?", "model": "mock/tool-call:get_weather",
                         "tools": [{"type": "function", "function": {"name": "get_weather"}}]}),
            ),
        )
        .await;
    assert_eq!(status, 202);
    wait_idle(&mut c, &conv).await;
    c.send(
        "POST",
        &format!("/v1/conversations/{conv}/title"),
        Some(json!({})),
    )
    .await;

    // Read everything back.
    for path in [
        format!("/v1/conversations/{conv}"),
        format!("/v1/conversations/{conv}/messages"),
        format!("/v1/conversations/{conv}/turns"),
        "/v1/catalog".to_owned(),
        "/v1/providers".to_owned(),
        "/v1/providers/mock".to_owned(),
        "/v1/models".to_owned(),
        "/v1/keys".to_owned(),
        "/v1/usage".to_owned(),
    ] {
        c.send("GET", &path, None).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, calls) = c.send("GET", "/v1/calls?limit=500", None).await;
        let page: Value = serde_json::from_str(calls.lines().last().unwrap()).unwrap();
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap().to_owned())
            .collect();
        if ids.len() >= 14 || Instant::now() > deadline {
            for id in ids {
                c.send("GET", &format!("/v1/calls/{id}"), None).await;
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, sessions) = c.send("GET", "/v1/llm-sessions?limit=500", None).await;
    let sessions: Value = serde_json::from_str(sessions.lines().last().unwrap()).unwrap();
    for s in sessions["data"].as_array().unwrap() {
        c.send(
            "GET",
            &format!("/v1/llm-sessions/{}", s["id"].as_str().unwrap()),
            None,
        )
        .await;
    }
    // The provider did get its key (so the canary was live).
    let sent = server
        .mock
        .requests()
        .iter()
        .filter(|r| r.header("authorization") == Some(format!("Bearer {provider_key}").as_str()))
        .count();
    assert!(
        sent > 5,
        "the provider key was sent to the provider ({sent})"
    );

    let bodies = std::mem::take(&mut c.bodies);
    let db_url = server.db_url();
    drop(c);
    let _dir = server.shutdown().await; // the files live while `_dir` does
    let db_path = db_url.trim_start_matches("sqlite://").to_owned();
    let mut database = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(format!("{db_path}{suffix}")) {
            database.extend_from_slice(&bytes);
        }
    }
    let database = String::from_utf8_lossy(&database).into_owned();
    let logs = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logs.len() > 10_000,
        "TRACE logs were captured ({} bytes)",
        logs.len()
    );

    let mut hits = Vec::new();
    for (name, canary) in [
        ("provider key", provider_key.as_str()),
        ("client key", &client_key[3..]),
        ("wrong client key", &wrong_key[3..]),
    ] {
        if database.contains(canary) {
            hits.push(format!("{name} in the database"));
        }
        if let Some(line) = logs.lines().find(|l| l.contains(canary)) {
            hits.push(format!(
                "{name} in the logs: {}",
                line.chars().take(300).collect::<String>()
            ));
        }
        for body in &bodies {
            if body.contains(canary) {
                hits.push(format!(
                    "{name} in a response: {}",
                    body.chars().take(300).collect::<String>()
                ));
            }
        }
    }
    if database.contains(&prompt_secret) {
        hits.push("the prompt's secret is stored despite redact_secrets".to_owned());
    }
    if logs.contains(&prompt_secret) {
        hits.push("the prompt's secret is in the logs".to_owned());
    }
    assert!(database.contains("[REDACTED]"), "redaction ran");
    assert!(hits.is_empty(), "{} hits:\n{}", hits.len(), hits.join("\n"));
}

/// Waits until the conversation has no running turn (a `requires_action`
/// turn counts as idle here: nothing runs).
async fn wait_idle(c: &mut Client<'_>, conv: &str) {
    // The client records every body it sees, so each poll borrows it mutably.
    let c = tokio::sync::Mutex::new(c);
    let c = &c;
    eventually(Duration::from_secs(15), "no turn running", || async move {
        let (_, turns) = c
            .lock()
            .await
            .send("GET", &format!("/v1/conversations/{conv}/turns"), None)
            .await;
        let turns: Value = serde_json::from_str(turns.lines().last().unwrap()).unwrap();
        if turns["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["status"] != "running")
        {
            Ok(())
        } else {
            Err(turns)
        }
    })
    .await;
}
