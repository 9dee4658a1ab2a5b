//! End to end against the real local model: llama.cpp `llama-server` with
//! SmolLM2-135M, started by `scripts/test.sh` (`MODELYARD_TEST_LLM_URL`).
//! The `modelyard` binary itself is started and driven over HTTP and
//! through its CLI. Assertions are on shapes and invariants, never on the
//! model's wording.
//!
//! Without `MODELYARD_TEST_LLM_URL` these tests fail, unless
//! `MODELYARD_SKIP_REAL_LLM=1` says to skip them on purpose.

#![allow(clippy::unwrap_used, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MODEL: &str = "local/smollm2-135m-instruct";

fn llm_url() -> Option<String> {
    match std::env::var("MODELYARD_TEST_LLM_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("MODELYARD_SKIP_REAL_LLM").as_deref() == Ok("1") => {
            eprintln!("skipped: MODELYARD_SKIP_REAL_LLM=1");
            None
        }
        _ => panic!(
            "MODELYARD_TEST_LLM_URL is not set: run scripts/test.sh (it starts the real model), \
             or set MODELYARD_SKIP_REAL_LLM=1 to skip the real-model tests"
        ),
    }
}

/// A `modelyard serve` child process with its own config and database.
struct Server {
    child: Child,
    base_url: String,
    config: PathBuf,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start(llm_url: &str) -> Server {
        Server::start_with(llm_url, "")
    }

    /// [`Server::start`] with `extra` TOML appended (providers, routes).
    fn start_with(llm_url: &str, extra: &str) -> Server {
        let dir = std::env::temp_dir().join(format!(
            "modelyard-e2e-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let config = dir.join("modelyard.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[storage]\nurl = \"sqlite://{}/e2e.db\"\n\
                 [defaults.presets.default]\nversion = 1\nmodel = \"{MODEL}\"\n\
                 [defaults.presets.default.provider_options]\ntemperature = 0\nmax_tokens = 64\n[[providers]]\nname = \"local\"\nkind = \"llama-cpp\"\nbase_url = \"{llm_url}\"\n\
                 [[providers]]\nname = \"twin\"\nkind = \"openai\"\nbase_url = \"{llm_url}/v1\"\n\
                 [[routes]]\nname = \"both\"\ntargets = [\"{MODEL}\", \"twin/smollm2-135m-instruct\"]\n{extra}\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn modelyard serve");
        let server = Server {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            config,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = reqwest::blocking_get(&format!("{}/health", server.base_url)) {
                if response {
                    return server;
                }
            }
            assert!(
                Instant::now() < deadline,
                "modelyard did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_modelyard"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run modelyard CLI")
    }
}

/// Tiny blocking health probe without pulling in reqwest's blocking feature.
mod reqwest {
    pub fn blocking_get(url: &str) -> std::io::Result<bool> {
        use std::io::{Read, Write};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        write!(
            stream,
            "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        stream.read_to_string(&mut out)?;
        Ok(out.starts_with("HTTP/1.1 200"))
    }
}

async fn wait_for_calls(client: &::reqwest::Client, base: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = client
            .get(format!("{base}/v1/calls"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= n {
            return data;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} calls recorded",
            data.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn chat_completions_through_modelyard_reach_the_real_model_and_are_logged() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;

    // /v1/models lists the real model under its composite id, with the
    // context window llama-server reports.
    let models: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entry = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MODEL)
        .unwrap_or_else(|| panic!("{MODEL} missing from {models}"))
        .clone();
    assert_eq!(entry["provider"], "local");
    assert!(
        entry["context_window"].as_u64().unwrap_or(0) >= 2048,
        "{entry}"
    );

    // Non-streamed.
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 16, "temperature": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["model"], MODEL);
    assert_eq!(completion["object"], "chat.completion");
    assert!(
        !completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{completion}"
    );
    assert!(completion["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Streamed, without include_usage: no usage chunk reaches the client.
    let mut response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 24, "temperature": 0, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut raw = Vec::new();
    let mut chunks_received = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        chunks_received += 1;
        raw.extend_from_slice(&chunk);
    }
    assert!(
        chunks_received > 2,
        "the answer arrived in {chunks_received} network chunk(s), not streamed"
    );
    let text = String::from_utf8(raw).unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"data: [DONE]"), "{text}");
    let mut streamed = String::new();
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(chunk["model"], MODEL);
        assert!(
            chunk["usage"].is_null() || !chunk["choices"].as_array().unwrap().is_empty(),
            "usage chunk leaked: {chunk}"
        );
        streamed.push_str(
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
    }
    assert!(!streamed.is_empty());

    // Both calls are on record with usage and timings.
    let calls = wait_for_calls(&client, base, 2).await;
    for call in &calls {
        assert_eq!(call["status"], "ok", "{call}");
        assert_eq!(call["modelId"], MODEL);
        assert_eq!(call["provider"], "local");
        assert_eq!(call["operation"], "gateway");
        assert!(
            call["usage"]["promptTokens"].as_i64().unwrap() > 0,
            "{call}"
        );
        assert!(
            call["usage"]["completionTokens"].as_i64().unwrap() > 0,
            "{call}"
        );
        assert!(call["latencyMs"].as_i64().unwrap() > 0, "{call}");
    }
    let stream_call = calls
        .iter()
        .find(|c| c["stream"] == true)
        .expect("streamed call");
    assert!(stream_call["timeToFirstTokenMs"].as_i64().unwrap() > 0);
    let detail: Value = client
        .get(format!(
            "{base}/v1/calls/{}",
            stream_call["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(detail["responseText"], streamed.as_str());
    assert_eq!(detail["request"]["model"], "smollm2-135m-instruct");
    assert_eq!(
        detail["request"]["messages"][0]["content"],
        "Count to five."
    );
}

#[tokio::test]
async fn cli_chats_lists_models_and_shows_calls() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);

    let models = server.cli(&["models"]);
    assert!(models.status.success(), "{models:?}");
    let models = String::from_utf8_lossy(&models.stdout);
    assert!(models.contains(MODEL));
    // The route, after the providers, with its targets' status.
    let lines: Vec<&str> = models.lines().collect();
    let route = lines
        .iter()
        .position(|l| l.trim_start().starts_with("both "))
        .unwrap_or_else(|| panic!("the route both: {models}"));
    assert!(lines[..route].contains(&"routes"), "{models}");
    assert!(
        lines[route].contains("least-busy, affinity conversation"),
        "{models}"
    );
    for (line, target) in [(1, MODEL), (2, "twin/smollm2-135m-instruct")] {
        let text = lines[route + line].trim();
        assert!(
            text.starts_with(target) && text.ends_with("available"),
            "{target}: {models}"
        );
    }

    // A chat through the route.
    let routed = server.cli(&["chat", "-m", "both", "--max-tokens", "8", "Say hi"]);
    assert!(routed.status.success(), "{routed:?}");

    let chat = server.cli(&["chat", "-m", MODEL, "--max-tokens", "12", "Say hi"]);
    assert!(chat.status.success(), "{chat:?}");
    assert!(!String::from_utf8_lossy(&chat.stdout).trim().is_empty());
    let stderr = String::from_utf8_lossy(&chat.stderr);
    assert!(
        stderr.contains(&format!("[{MODEL} · ")) && stderr.contains("completion tokens]"),
        "{stderr}"
    );

    // The prompt can come from stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_modelyard"))
        .arg("--config")
        .arg(&server.config)
        .args(["chat", "--max-tokens", "8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"What is the capital of France?")
            .unwrap();
    }
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success(), "{piped:?}");

    let client = ::reqwest::Client::new();
    let calls = wait_for_calls(&client, &server.base_url, 3).await;
    let listing = server.cli(&["calls"]);
    assert!(listing.status.success());
    let listing = String::from_utf8_lossy(&listing.stdout);
    let id = calls[0]["id"].as_str().unwrap();
    assert!(listing.contains(id) && listing.contains(MODEL), "{listing}");
    let routed = calls
        .iter()
        .find(|c| c["route"] == "both")
        .unwrap_or_else(|| panic!("the routed call: {calls:#?}"));
    let routed_id = routed["id"].as_str().unwrap();
    assert!(
        listing
            .lines()
            .any(|l| l.contains(routed_id) && l.contains("both #1")),
        "{listing}"
    );
    let show = server.cli(&["calls", "show", routed_id]);
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("attempt    1 (route both)"),
        "{show:?}"
    );

    let show = server.cli(&["calls", "show", id]);
    assert!(show.status.success());
    let show = String::from_utf8_lossy(&show.stdout);
    assert!(show.contains("What is the capital of France?"), "{show}");

    let missing = server.cli(&["chat", "-m", "local/nope", "hi"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("model 'nope' is not served by provider 'local'"));
}

/// The story's length in tokens; no other test in this binary asks for as many.
const STORY_TOKENS: u64 = 2000;

#[tokio::test]
async fn client_disconnect_stops_the_real_generation() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let mut response = client
        .post(format!("{}/v1/chat/completions", server.base_url))
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "Write a long story about a dragon."}], "max_tokens": STORY_TOKENS, "ignore_eos": true, "stream": true}))
        .send()
        .await
        .unwrap();
    response.chunk().await.unwrap().expect("first chunk");
    drop(response);
    let calls = wait_for_calls(&client, &server.base_url, 1).await;
    assert_eq!(calls[0]["status"], "error");
    assert_eq!(
        calls[0]["error"],
        "client disconnected before the response completed"
    );
    // llama-server stopped generating: 2000 tokens take ~30 s at this model's
    // speed, so the story's slot (the only one asked for 2000 tokens) going
    // idle within 10 s means it was cancelled. Other tests in this binary
    // share the server, so the other slot may well be busy meanwhile.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let slots: Value = client
            .get(format!("{llm}/slots"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let slots = slots
            .as_array()
            .expect("llama-server /slots lists its slots")
            .clone();
        let story_running = slots
            .iter()
            .any(|s| s["is_processing"] == true && s["params"]["n_predict"] == STORY_TOKENS);
        if !story_running {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the story's slot is still generating: {slots:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn catalog_reports_the_context_window_llama_server_serves_with() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let props: Value = client
        .get(format!("{llm}/props"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let n_ctx = props["default_generation_settings"]["n_ctx"]
        .as_u64()
        .expect("llama-server reports n_ctx");

    let catalog: Value = client
        .get(format!("{}/v1/catalog", server.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let group = &catalog["providers"][0];
    assert_eq!(group["name"], "local");
    assert_eq!(group["kind"], "llama-cpp");
    assert_eq!(group["status"], "online");
    let model = group["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == MODEL)
        .unwrap_or_else(|| panic!("{MODEL} missing from {catalog}"));
    assert_eq!(model["contextWindow"].as_u64(), Some(n_ctx));
    assert_eq!(model["contextWindowSource"], "provider");
    assert_eq!(model["contextWindowFrom"], "/props n_ctx");
    assert_eq!(model["loaded"], true);

    // A favorite shows first, through the CLI too.
    let added = server.cli(&["favorites", "add", MODEL]);
    assert!(added.status.success(), "{added:?}");
    let listing = server.cli(&["models"]);
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.starts_with("★ favorites"), "{listing}");
    assert!(
        listing.contains(&format!("{n_ctx} (provider)")),
        "{listing}"
    );
}

#[tokio::test]
async fn a_conversation_remembers_its_model_and_each_answer_names_its_model() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    const TWIN: &str = "twin/smollm2-135m-instruct";

    let created: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({"title": "two models", "model": MODEL}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["model"], MODEL);

    // Turn one: the conversation's model, through the CLI.
    let first = server.cli(&["chat", "-c", &id, "Name a color."]);
    assert!(first.status.success(), "{first:?}");
    assert!(!String::from_utf8_lossy(&first.stdout).trim().is_empty());

    // Turn two overrides the model: it wins and becomes the selection.
    let second = server.cli(&["chat", "-c", &id, "-m", TWIN, "Name another color."]);
    assert!(second.status.success(), "{second:?}");

    let messages: Value = client
        .get(format!("{base}/v1/conversations/{id}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers: Vec<&Value> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(answers.len(), 2, "{messages}");
    assert_eq!(answers[0]["modelId"], MODEL);
    assert_eq!(answers[1]["modelId"], TWIN);
    for answer in &answers {
        assert!(
            answer["usage"]["completionTokens"].as_u64().unwrap() > 0,
            "{answer}"
        );
        assert!(!answer["content"].as_str().unwrap().is_empty());
    }

    let conversation: Value = client
        .get(format!("{base}/v1/conversations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conversation["model"], TWIN, "the override persisted");
    assert_eq!(conversation["latestModelId"], TWIN);
    let total: u64 = answers
        .iter()
        .map(|a| a["usage"]["totalTokens"].as_u64().unwrap())
        .sum();
    assert_eq!(conversation["usage"]["totalTokens"].as_u64(), Some(total));

    let history: Value = client
        .get(format!("{base}/v1/conversations/{id}/model-history"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["model"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("selected".to_owned(), MODEL.to_owned()),
            ("turn".to_owned(), MODEL.to_owned()),
            ("selected".to_owned(), TWIN.to_owned()),
            ("turn".to_owned(), TWIN.to_owned()),
        ]
    );

    // Turn two sent the whole conversation: its call has both user messages.
    let calls = wait_for_calls(&client, base, 2).await;
    let last = &calls[0];
    assert_eq!(last["operation"], "chat");
    assert_eq!(last["modelId"], TWIN);
    let detail: Value = client
        .get(format!("{base}/v1/calls/{}", last["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = detail["request"]["messages"].as_array().unwrap();
    assert_eq!(sent.len(), 3, "user, assistant, user: {sent:?}");
    assert_eq!(sent[2]["content"], "Name another color.");
}

#[tokio::test]
async fn title_and_compaction_are_their_own_sessions_and_later_turns_send_the_summary() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    const TWIN: &str = "twin/smollm2-135m-instruct";
    const FIRST: &str = "My cat is called Pixel. Say hello to Pixel.";

    // A config that bounds every answer, so the test stays fast under load.
    let config: Value = client
        .post(format!("{base}/v1/llms"))
        .json(&json!({"model": MODEL, "providerOptions": {"maxTokens": 48}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({"llmId": config["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    for prompt in [FIRST, "Name a color."] {
        let out = server.cli(&["chat", "-c", &id, prompt]);
        assert!(out.status.success(), "{out:?}");
    }

    // Title: the `title` operation, the default model.
    let out = server.cli(&["conversations", "title", &id]);
    assert!(out.status.success(), "{out:?}");
    let title = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !title.is_empty() && title.chars().count() <= 80,
        "{title:?}"
    );
    let conversation: Value = client
        .get(format!("{base}/v1/conversations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conversation["title"], title.as_str());

    // Compaction of the first turn, with a per-call model.
    let out = server.cli(&[
        "conversations",
        "compact",
        &id,
        "--keep-last",
        "2",
        "-m",
        TWIN,
    ]);
    assert!(out.status.success(), "{out:?}");
    let summary = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!summary.is_empty());

    let sessions = |operation: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let page: Value = client
                .get(format!("{base}/v1/calls?operation={operation}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["data"].as_array().cloned().unwrap_or_default()
        }
    };
    wait_for_calls(&client, base, 4).await;
    let titles = sessions("title").await;
    assert_eq!(titles.len(), 1, "{titles:?}");
    assert_eq!(titles[0]["modelId"], MODEL);
    assert_eq!(titles[0]["conversationId"], id.as_str());
    let compactions = sessions("compaction").await;
    assert_eq!(compactions.len(), 1, "{compactions:?}");
    assert_eq!(compactions[0]["modelId"], TWIN);
    for call in titles.iter().chain(&compactions) {
        assert!(
            call["usage"]["promptTokens"].as_u64().unwrap() > 0,
            "{call}"
        );
        assert!(
            call["usage"]["completionTokens"].as_u64().unwrap() > 0,
            "{call}"
        );
        assert_ne!(call["sessionId"], Value::Null);
    }

    // A later turn sends the summary instead of the first turn.
    let out = server.cli(&["chat", "-c", &id, "Name a fruit."]);
    assert!(out.status.success(), "{out:?}");
    let calls = wait_for_calls(&client, base, 5).await;
    let last = &calls[0];
    assert_eq!(last["operation"], "chat");
    let detail: Value = client
        .get(format!("{base}/v1/calls/{}", last["id"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sent = detail["request"]["messages"].as_array().unwrap();
    assert_eq!(sent[0]["role"], "system", "{sent:?}");
    assert_eq!(
        sent[0]["content"],
        format!("Summary of the earlier conversation: {summary}")
    );
    assert!(
        !sent.iter().any(|m| m["content"] == FIRST),
        "the compacted user message is not sent: {sent:?}"
    );
    assert_eq!(sent.last().unwrap()["content"], "Name a fruit.");
    assert_eq!(sent.len(), 4, "summary, user, assistant, user: {sent:?}");
}

/// The SSE events of a streamed response, as `(event, data)`.
async fn sse_events(mut response: ::reqwest::Response) -> Vec<(String, Value)> {
    assert!(response.status().is_success(), "{}", response.status());
    let mut decoder = modelyard_upstream::sse::SseDecoder::new();
    let mut events = Vec::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(120), response.chunk())
        .await
        .expect("an event within 120 s")
        .unwrap()
    {
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            let data = serde_json::from_slice(&event.data).unwrap_or(Value::Null);
            events.push((event.event.unwrap_or_default(), data));
        }
    }
    events
}

#[tokio::test]
async fn the_advisor_streams_its_answer_with_the_real_model() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    const TWIN: &str = "twin/smollm2-135m-instruct";
    let post = |path: &str, body: Value| {
        let request = client.post(format!("{base}{path}")).json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    // Greedy decoding for the chat model; the advisor is the twin provider.
    let (status, chat) = post(
        "/v1/llms",
        json!({"displayName": "chat", "model": MODEL,
               "providerOptions": {"temperature": 0, "maxTokens": 80}}),
    )
    .await;
    assert_eq!(status, 201, "{chat}");
    let (status, advisor) = post(
        "/v1/llms",
        json!({"displayName": "advisor", "model": TWIN,
               "providerOptions": {"temperature": 0, "maxTokens": 48, "reasoningEffort": "low"}}),
    )
    .await;
    assert_eq!(status, 201, "{advisor}");
    let (status, conversation) = post(
        "/v1/conversations",
        json!({"advisor": true, "llmId": chat["id"], "llmOverrides": {"advisor": advisor["id"]}}),
    )
    .await;
    assert_eq!(status, 201, "{conversation}");
    let id = conversation["id"].as_str().unwrap().to_owned();
    // SmolLM2-135M calls a tool only after one example exchange.
    let example_result = json!({"type": "advice", "advice": "Boil it for 8 minutes.",
        "advisorModel": TWIN, "remainingUses": 2});
    let (status, imported) = post(
        &format!("/v1/conversations/{id}/messages"),
        json!({"messages": [
            {"role": "user", "content": "Ask the advisor: how do I boil an egg?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "advisor", "arguments": "{\"question\": \"How do I boil an egg?\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": example_result.to_string()},
            {"role": "assistant", "content": "Boil it for 8 minutes."}
        ]}),
    )
    .await;
    assert_eq!(status, 201, "{imported}");
    assert_eq!(imported["imported"], 4);

    // A streamed turn: the advisor's answer arrives live, then as the result.
    let response = client
        .post(format!("{base}/v1/conversations/{id}/turns"))
        .json(&json!({"content": "Ask the advisor: how do I make tea?", "stream": true}))
        .send()
        .await
        .unwrap();
    let events = sse_events(response).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"turn.completed"), "{kinds:?}");
    let started = events
        .iter()
        .find(|(k, _)| k == "tool_call.started")
        .unwrap_or_else(|| panic!("the model called a tool: {kinds:?}"));
    assert_eq!(started.1["name"], "advisor");
    let call = started.1["toolCallId"].as_str().unwrap();
    let phases: Vec<&str> = events
        .iter()
        .filter(|(k, _)| k == "advisor.phase")
        .map(|(_, d)| d["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "preparing_context",
            "waiting_for_response",
            "streaming",
            "finalizing_result"
        ]
    );
    let live: String = events
        .iter()
        .filter(|(k, d)| k == "advisor.output" && d["toolCallId"] == call)
        .map(|(_, d)| d["delta"].as_str().unwrap())
        .collect();
    let tool = &events
        .iter()
        .find(|(k, _)| k == "message.tool")
        .expect("the advisor's result")
        .1;
    assert_eq!(tool["modelId"], TWIN);
    assert_eq!(tool["isError"], false);
    let result: Value = serde_json::from_str(tool["content"].as_str().unwrap()).unwrap();
    assert_eq!(result["type"], "advice");
    assert_eq!(result["advisorModel"], TWIN);
    // The reasoning effort the advisor's config sent it with.
    assert_eq!(result["reasoningLevel"], "low", "{result}");
    assert_eq!(result["remainingUses"], 2);
    let advice = result["advice"].as_str().unwrap();
    assert!(!advice.trim().is_empty());
    assert_eq!(live, advice, "the live output joins into the result");
    let answers: Vec<&Value> = events
        .iter()
        .filter(|(k, _)| k == "message.assistant")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(answers.len(), 2, "a tool step, then the answer");
    assert_eq!(answers[1]["modelId"], MODEL);

    // Usage: the turn's total is the chat steps plus the advisor.
    let turn_id = started.1["turnId"].as_str().unwrap();
    let step_total: u64 = answers
        .iter()
        .map(|a| a["usage"]["totalTokens"].as_u64().unwrap())
        .sum::<u64>()
        + tool["usage"]["totalTokens"].as_u64().unwrap();
    let turns: Value = client
        .get(format!("{base}/v1/conversations/{id}/turns"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        turns["data"][0]["usage"]["totalTokens"].as_u64(),
        Some(step_total)
    );
    // The advisor's session is a child of the turn's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let sessions = loop {
        let page: Value = client
            .get(format!("{base}/v1/llm-sessions?conversationId={id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let data = page["data"].as_array().cloned().unwrap_or_default();
        if data.len() >= 2 {
            break data;
        }
        assert!(Instant::now() < deadline, "sessions: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let advisor_session = sessions
        .iter()
        .find(|s| s["operation"] == "advisor")
        .unwrap();
    assert_eq!(advisor_session["parentSessionId"], turn_id);
    assert_eq!(advisor_session["modelId"], TWIN);
    assert_eq!(advisor_session["status"], "ok");
    let chat_session = sessions.iter().find(|s| s["id"] == turn_id).unwrap();
    assert_eq!(chat_session["callCount"], 2);

    // The CLI shows the advisor set apart.
    let out = server.cli(&["chat", "-c", &id, "Ask the advisor: how do I plant a tree?"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr.contains("╭─ advisor"), "{stderr}");
    assert!(stderr.contains(&format!("advice from {TWIN}")), "{stderr}");
    assert!(stderr.contains("  │ "), "{stderr}");
}

/// A second llama-server (same model) on its own port, started with
/// `scripts/llm-start.sh` and stopped with `scripts/llm-stop.sh` (also on
/// drop).
struct ExtraLlama {
    port: u16,
    url: String,
}

impl ExtraLlama {
    fn script(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts")
            .join(name)
    }

    fn start() -> ExtraLlama {
        Self::start_with(&[])
    }

    /// [`Self::start`] with more `llm-start.sh` options (`--ctx-size 2048`).
    fn start_with(options: &[&str]) -> ExtraLlama {
        let port = free_port();
        let output = Command::new(Self::script("llm-start.sh"))
            .args(["--port", &port.to_string(), "--parallel", "1"])
            .args(options)
            .stderr(Stdio::inherit())
            .output()
            .expect("run llm-start.sh");
        assert!(output.status.success(), "llm-start.sh failed: {output:?}");
        let url = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        ExtraLlama { port, url }
    }

    fn stop(&self) {
        let _ = Command::new(Self::script("llm-stop.sh"))
            .args(["--port", &self.port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for ExtraLlama {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test]
async fn a_route_over_two_llama_servers_survives_one_of_them_dying_mid_conversation() {
    let Some(llm) = llm_url() else { return };
    let second = ExtraLlama::start();
    // Round-robin's first pick on a fresh server is the first target: the
    // conversation starts on the second llama-server, the one this test
    // can kill.
    let server = Server::start_with(
        &llm,
        &format!(
            "[[providers]]\nname = \"second\"\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n\
             probe_interval_ms = 600000\n\n\
             [[routes]]\nname = \"smol\"\n\
             targets = [\"second/smollm2-135m-instruct\", \"{MODEL}\"]\n\
             strategy = \"round-robin\"\n",
            second.url
        ),
    );
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    let created: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({"title": "routed", "model": "smol"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let turn = |text: &str| {
        let out = server.cli(&["chat", "-c", &id, text]);
        assert!(out.status.success(), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
    };
    turn("Name a fruit.");
    turn("Name another fruit.");
    // The host that served the conversation dies.
    second.stop();
    turn("Name a vegetable.");
    turn("Name a tree.");

    let messages: Value = client
        .get(format!("{base}/v1/conversations/{id}/messages"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let served: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["modelId"].as_str().unwrap())
        .collect();
    assert_eq!(
        served,
        [
            "second/smollm2-135m-instruct",
            "second/smollm2-135m-instruct",
            MODEL,
            MODEL
        ],
        "{messages}"
    );
    let conversation: Value = client
        .get(format!("{base}/v1/conversations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(conversation["model"], "smol", "the route stays selected");
    // The failed attempt on the dead host is in the call log, then the
    // attempt that served.
    let calls = wait_for_calls(&client, base, 5).await;
    let failed: Vec<&Value> = calls.iter().filter(|c| c["status"] == "error").collect();
    assert_eq!(failed.len(), 1, "{calls:#?}");
    assert_eq!(failed[0]["modelId"], "second/smollm2-135m-instruct");
    assert_eq!(failed[0]["route"], "smol");
}

/// A real 2,048-token window (its own llama-server, `--ctx-size 2048`): a
/// 30-turn conversation completes, compacted automatically at least once
/// (`[turns] context_strategy = "compact"`, the default), and no call ever
/// meets the upstream's context-size error.
#[tokio::test]
async fn thirty_turns_on_a_2048_token_window_compact_and_never_hit_the_context_limit() {
    let Some(llm) = llm_url() else { return };
    let small = ExtraLlama::start_with(&["--ctx-size", "2048"]);
    let server = Server::start_with(
        &llm,
        &format!(
            "[[providers]]\nname = \"small\"\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n",
            small.url
        ),
    );
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    let small_model = "small/smollm2-135m-instruct";
    // Summaries on the same small model, at most 128 tokens.
    let config: Value = client
        .post(format!("{base}/v1/llms"))
        .json(
            &json!({"displayName": "small summaries", "model": small_model,
                      "providerOptions": {"maxTokens": 128, "temperature": 0}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let created: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({"model": small_model, "llmOverrides": {"compaction": config["id"]}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = created["id"].as_str().unwrap().to_owned();
    let window = eventually_json(&client, &format!("{base}/v1/conversations/{conv}"), |c| {
        c["contextWindow"].is_u64()
    })
    .await["contextWindow"]
        .as_u64()
        .unwrap();
    assert_eq!(window, 2048);

    const TOPICS: [&str; 10] = [
        "rivers",
        "mountains",
        "bread",
        "bicycles",
        "libraries",
        "volcanoes",
        "tea",
        "bridges",
        "forests",
        "trains",
    ];
    for n in 0..30 {
        let topic = TOPICS[n % TOPICS.len()];
        let content = format!(
            "Question {n}: tell me three short facts about {topic}. Keep each fact to one \
             sentence, mention the number {n} once, and remember that my favourite topic so far \
             is {topic} and that I asked about it in question number {n} of our long chat."
        );
        let started = client
            .post(format!("{base}/v1/conversations/{conv}/turns"))
            .json(&json!({"content": content}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            started.status(),
            202,
            "turn {n}: {:?}",
            started.text().await
        );
        let started: Value = started.json().await.unwrap();
        let turn_id = started["turnId"].as_str().unwrap().to_owned();
        let turns = eventually_json(
            &client,
            &format!("{base}/v1/conversations/{conv}/turns"),
            |t| {
                t["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["id"] == turn_id.as_str() && t["status"] != "running")
            },
        )
        .await;
        let turn = turns["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == turn_id.as_str())
            .unwrap()
            .clone();
        assert_eq!(turn["status"], "completed", "turn {n}: {turn}");
    }

    // At least one automatic compaction, recorded as a compaction session.
    let sessions: Value = client
        .get(format!(
            "{base}/v1/llm-sessions?conversationId={conv}&limit=200"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let compactions = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["operation"] == "compaction")
        .count();
    assert!(compactions >= 1, "{sessions}");
    // No call failed: none met the upstream's context error.
    let calls = eventually_json(
        &client,
        &format!("{base}/v1/calls?conversationId={conv}&limit=500"),
        |page| page["data"].as_array().unwrap().len() >= 30 + compactions,
    )
    .await["data"]
        .as_array()
        .unwrap()
        .clone();
    let failed: Vec<&Value> = calls.iter().filter(|c| c["status"] != "ok").collect();
    assert!(failed.is_empty(), "{failed:#?}");
    for call in &calls {
        let prompt = call["usage"]["promptTokens"].as_u64().unwrap_or(0);
        assert!(prompt < window, "{call}");
    }
    let conversation: Value = client
        .get(format!("{base}/v1/conversations/{conv}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size = conversation["contextTokens"].as_u64().unwrap();
    assert!(size > 0 && size < window, "{conversation}");
    eprintln!(
        "30 turns on a {window}-token window: {compactions} automatic compaction(s), last \
         prompt {size} tokens"
    );
}

/// Polls `GET url` (for up to 3 minutes) until `pred` accepts the JSON.
async fn eventually_json(
    client: &::reqwest::Client,
    url: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let value: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        if pred(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{url}: {value}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` messages (user, assistant, ...) of about 1,500 tokens in all, unique
/// to `seed` from their first word on (so no two conversations share a
/// cached prefix).
fn long_history(seed: &str) -> Vec<Value> {
    const WORDS: [&str; 12] = [
        "copper", "harbor", "lantern", "meadow", "orbit", "pepper", "quartz", "river", "saddle",
        "timber", "velvet", "willow",
    ];
    (0..8)
        .map(|m| {
            let text: String = (0..6)
                .map(|s| {
                    let k = m * 6 + s;
                    format!(
                        "In step {k} of record {seed}, the {} {} moved toward the {}. ",
                        WORDS[k % 12],
                        WORDS[(k * 5 + 1) % 12],
                        WORDS[(k * 7 + 3) % 12]
                    )
                })
                .collect();
            let role = if m % 2 == 0 { "user" } else { "assistant" };
            json!({"role": role, "content": format!("{seed}: {text}")})
        })
        .collect()
}

/// A conversation holding [`long_history`]`(seed)`.
async fn long_conversation(client: &::reqwest::Client, base: &str, seed: &str) -> String {
    let conv: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = conv["id"].as_str().unwrap().to_owned();
    let response = client
        .post(format!("{base}/v1/conversations/{id}/messages"))
        .json(&json!({"messages": long_history(seed)}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
    id
}

/// Runs a turn of `conv` to its end; returns the call of its (one) step,
/// as the call log has it.
async fn turn_call(client: &::reqwest::Client, base: &str, conv: &str, content: &str) -> Value {
    let started: Value = client
        .post(format!("{base}/v1/conversations/{conv}/turns"))
        .json(&json!({"content": content}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let calls: Value = client
            .get(format!(
                "{base}/v1/calls?conversationId={conv}&operation=chat"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = calls["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["turnId"] == turn_id.as_str())
            .cloned();
        if let Some(call) = found {
            assert_eq!(call["status"], "ok", "{call}");
            return call;
        }
        assert!(Instant::now() < deadline, "turn {turn_id} not recorded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn warm(client: &::reqwest::Client, base: &str, conv: &str) -> Value {
    let response = client
        .post(format!("{base}/v1/conversations/{conv}/warm"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Tokens llama-server had to process for a call: its prompt minus what it
/// reported as cached (`usage.prompt_tokens_details.cached_tokens`).
fn processed(call: &Value) -> u64 {
    let usage = &call["usage"];
    usage["promptTokens"].as_u64().unwrap() - usage["cachedPromptTokens"].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn a_warm_conversation_s_next_turn_reuses_the_cached_prefix() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    let nonce = format!("{}-{}", std::process::id(), free_port());

    // Warmed: llama-server itself says the next turn reused the prefix.
    let conv = long_conversation(&client, base, &format!("warm{nonce}")).await;
    let warmed = warm(&client, base, &conv).await;
    assert_eq!(warmed["action"], "prefix-cached", "{warmed}");
    assert_eq!(warmed["deployment"], MODEL);
    assert_eq!(warmed["resolvedFrom"], "serverDefault");
    let deadline = Instant::now() + Duration::from_secs(10);
    let primer = loop {
        let calls: Value = client
            .get(format!(
                "{base}/v1/calls?conversationId={conv}&operation=warm"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(call) = calls["data"].as_array().and_then(|d| d.first()) {
            break call.clone();
        }
        assert!(Instant::now() < deadline, "the warm call was not recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(primer["sessionId"], warmed["sessionId"], "{primer}");
    let prefix = primer["usage"]["promptTokens"].as_u64().unwrap();
    assert!(
        prefix >= 1_200,
        "the conversation is {prefix} tokens: {primer}"
    );
    assert_eq!(primer["usage"]["completionTokens"], 1, "{primer}");
    let call = turn_call(&client, base, &conv, "Name one object from step 3.").await;
    let prompt = call["usage"]["promptTokens"].as_u64().unwrap();
    assert!(prompt > prefix, "{call}");
    eprintln!(
        "warm: prefix {prefix} tokens; next turn: prompt {prompt}, processed {}",
        processed(&call)
    );
    // Only the new message (and the template around it) was processed.
    assert!(
        processed(&call) <= prompt - prefix + 16,
        "processed {} of {prompt} prompt tokens after a warm of {prefix}: {call}",
        processed(&call)
    );

    // Not warmed: the whole conversation is processed.
    let cold = long_conversation(&client, base, &format!("cold{nonce}")).await;
    let call = turn_call(&client, base, &cold, "Name one object from step 3.").await;
    eprintln!(
        "cold: prompt {}, processed {}",
        call["usage"]["promptTokens"],
        processed(&call)
    );
    assert!(
        processed(&call) >= 1_000,
        "a cold conversation processed only {}: {call}",
        processed(&call)
    );

    // The CLI warms too.
    let out = server.cli(&["conversations", "warm", &cold]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout} {:?}", out.stderr);
    assert!(
        stdout.starts_with(&format!("prefix-cached {MODEL} in ")),
        "{stdout}"
    );
}

/// Time to first token of a turn on a ~1,500-token conversation, with and
/// without a warm first. Prints the figures; asserts nothing about them.
/// `cargo test -p modelyard --test real_llm -- --ignored --nocapture ttft`
#[tokio::test]
#[ignore = "benchmark: prints figures"]
async fn ttft_with_and_without_a_warm() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    let nonce = format!("{}-{}", std::process::id(), free_port());
    let rounds: usize = std::env::var("TTFT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let (mut cold, mut warmed) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let conv = long_conversation(&client, base, &format!("c{round}x{nonce}")).await;
        let call = turn_call(&client, base, &conv, "Name one object from step 3.").await;
        cold.push(call["timeToFirstTokenMs"].as_i64().unwrap());
        let conv = long_conversation(&client, base, &format!("w{round}x{nonce}")).await;
        let answer = warm(&client, base, &conv).await;
        assert_eq!(answer["action"], "prefix-cached");
        let call = turn_call(&client, base, &conv, "Name one object from step 3.").await;
        warmed.push(call["timeToFirstTokenMs"].as_i64().unwrap());
        eprintln!(
            "round {round}: prompt {} tokens; TTFT cold {} ms, after warm {} ms (warm took {} ms)",
            call["usage"]["promptTokens"], cold[round], warmed[round], answer["durationMs"]
        );
    }
    let median = |v: &mut Vec<i64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    println!(
        "TTFT over {rounds} rounds, median: without warm {} ms, after warm {} ms",
        median(&mut cold),
        median(&mut warmed)
    );
}

/// `POST /v1/messages` to a provider with `messages_api = true` (the same
/// llama-server, which serves Anthropic's Messages API itself): passed
/// through, not translated — the upstream's own message and named events
/// come back with `model` set to the id the client sent, and its usage is
/// in the call log.
#[tokio::test]
async fn messages_pass_through_to_a_llama_server_that_speaks_them() {
    let Some(llm) = llm_url() else { return };
    let native = "native/smollm2-135m-instruct";
    let server = Server::start_with(
        &llm,
        &format!(
            "[[providers]]\nname = \"native\"\nkind = \"llama-cpp\"\nbase_url = \"{llm}\"\nmessages_api = true\n"
        ),
    );
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    let body = |stream: bool| {
        json!({"model": native, "max_tokens": 16, "temperature": 0, "stream": stream,
               "system": "You are terse.",
               "messages": [{"role": "user", "content": "Say hello."}]})
    };

    let response = client
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(message["type"], "message", "{message}");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], native);
    let text: String = message["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert!(!text.is_empty(), "{message}");
    // llama-server reports the prompt it read from its cache apart.
    let input = message["usage"]["input_tokens"].as_u64().unwrap()
        + message["usage"]["cache_read_input_tokens"]
            .as_u64()
            .unwrap_or(0);
    let output = message["usage"]["output_tokens"].as_u64().unwrap();
    assert!(input > 0 && output > 0, "{message}");

    let response = client
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let raw = response.text().await.unwrap();
    let events: Vec<(String, Value)> = raw
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or_default()
                .to_owned();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{raw}");
    assert_eq!(names.last(), Some(&"message_stop"), "{raw}");
    assert!(names.contains(&"content_block_delta"), "{raw}");
    assert_eq!(events[0].1["message"]["model"], native, "{raw}");
    let streamed: String = events
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert!(!streamed.is_empty(), "{raw}");

    // The call log: two `messages` calls of the native provider, with the
    // usage the upstream reported; nothing went to its chat completions.
    let calls = wait_for_calls(&client, base, 2).await;
    for call in &calls[..2] {
        assert_eq!(call["operation"], "messages", "{call}");
        assert_eq!(call["modelId"], native);
        assert_eq!(call["status"], "ok", "{call}");
        assert!(
            call["usage"]["promptTokens"].as_u64().unwrap_or(0) > 0,
            "{call}"
        );
        assert!(
            call["usage"]["completionTokens"].as_u64().unwrap_or(0) > 0,
            "{call}"
        );
    }
    let detail: Value = client
        .get(format!(
            "{base}/v1/calls/{}",
            calls[1]["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The request went as the client wrote it (a Messages body), `model`
    // spliced to the upstream's name.
    assert_eq!(detail["request"]["system"], "You are terse.", "{detail}");
    assert_eq!(detail["request"]["model"], "smollm2-135m-instruct");
    assert_eq!(detail["responseText"].as_str().unwrap_or(""), text);
    assert_eq!(detail["usage"]["promptTokens"].as_u64(), Some(input));

    // count_tokens goes to the native provider's own endpoint.
    let response = client
        .post(format!("{base}/v1/messages/count_tokens"))
        .json(&json!({"model": native, "system": "You are terse.",
                      "messages": [{"role": "user", "content": "Say hello."}]}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let counted: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{counted}");
    assert!(
        counted["input_tokens"].as_u64().unwrap_or(0) > 0,
        "{counted}"
    );
}

#[tokio::test]
async fn the_arena_runs_the_real_model_under_two_ids_side_by_side() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    const TWIN: &str = "twin/smollm2-135m-instruct";

    // Streamed: both columns answer, each delta names its model, and each
    // model's deltas join to its completed text.
    let response = client
        .post(format!("{base}/v1/arena"))
        .json(
            &json!({"models": [MODEL, TWIN], "prompt": "Name a color.", "stream": true,
                      "options": {"max_tokens": 24, "temperature": 0}}),
        )
        .send()
        .await
        .unwrap();
    let events = sse_events(response).await;
    assert_eq!(events.last().unwrap().0, "arena.done", "{events:?}");
    let run_id = events.last().unwrap().1["id"].as_str().unwrap().to_owned();
    for (index, model) in [MODEL, TWIN].iter().enumerate() {
        let joined: String = events
            .iter()
            .filter(|(name, data)| name == "arena.delta" && data["index"] == index)
            .map(|(_, data)| {
                assert_eq!(data["model"], *model, "{data}");
                data["delta"].as_str().unwrap()
            })
            .collect();
        let completed = events
            .iter()
            .find(|(name, data)| name == "arena.completed" && data["index"] == index)
            .unwrap_or_else(|| panic!("{model} completed: {events:?}"));
        let text = completed.1["text"].as_str().unwrap();
        assert!(!text.trim().is_empty(), "{completed:?}");
        assert_eq!(joined, text);
        assert!(
            completed.1["usage"]["completionTokens"].as_u64().unwrap() > 0,
            "{completed:?}"
        );
        assert!(completed.1["ttftMs"].as_i64().is_some(), "{completed:?}");
    }

    // One `arena` session with one call per model.
    let deadline = Instant::now() + Duration::from_secs(10);
    let session = loop {
        let session: Value = client
            .get(format!("{base}/v1/llm-sessions/{run_id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if session["calls"].as_array().is_some() {
            break session;
        }
        assert!(
            Instant::now() < deadline,
            "arena session {run_id}: {session}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(session["operation"], "arena", "{session}");
    assert_eq!(session["calls"].as_array().unwrap().len(), 2, "{session}");

    // The CLI: both answers under their headers, a summary line each.
    let out = server.cli(&[
        "arena",
        "-m",
        MODEL,
        "-m",
        TWIN,
        "--max-tokens",
        "16",
        "Say hi.",
    ]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for model in [MODEL, TWIN] {
        assert!(stdout.contains(&format!("== {model} ==")), "{stdout}");
        assert!(
            stderr.lines().any(|l| l.starts_with(&format!("{model}: "))),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_conversation_arena_on_the_real_model_waits_for_its_pick() {
    let Some(llm) = llm_url() else { return };
    let server = Server::start(&llm);
    let client = ::reqwest::Client::new();
    let base = &server.base_url;
    const TWIN: &str = "twin/smollm2-135m-instruct";
    let conv: Value = client
        .post(format!("{base}/v1/conversations"))
        .json(&json!({"title": "arena"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();

    // Both ids of the real model answer the message; the turn waits.
    let response = client
        .post(format!("{base}/v1/conversations/{conv}/arena"))
        .json(&json!({"content": "Name a fruit.", "models": [MODEL, TWIN],
                      "options": {"max_tokens": 16, "temperature": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let run = answer["runId"].as_str().unwrap().to_owned();
    let turn = answer["turnId"].as_str().unwrap().to_owned();
    let results = answer["results"].as_array().unwrap();
    for (result, model) in results.iter().zip([MODEL, TWIN]) {
        assert_eq!(result["model"], model, "{answer}");
        assert_eq!(result["status"], "completed", "{answer}");
        assert!(
            !result["text"].as_str().unwrap().trim().is_empty(),
            "{answer}"
        );
        assert!(result["usage"]["completionTokens"].as_u64().unwrap() > 0);
    }
    let turns: Value = client
        .get(format!("{base}/v1/conversations/{conv}/turns"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(turns["data"][0]["status"], "awaiting_pick", "{turns}");

    // The twin's answer is picked: it is the turn's answer, with its usage.
    let response = client
        .post(format!("{base}/v1/conversations/{conv}/arena/{run}/pick"))
        .json(&json!({"model": TWIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let picked: Value = response.json().await.unwrap();
    assert_eq!(picked["turnId"], turn.as_str());
    assert_eq!(picked["message"]["modelId"], TWIN, "{picked}");
    assert_eq!(picked["message"]["content"], results[1]["text"], "{picked}");
    assert_eq!(
        picked["message"]["usage"]["completionTokens"],
        results[1]["usage"]["completionTokens"]
    );
    let c: Value = client
        .get(format!("{base}/v1/conversations/{conv}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(c["latestModelId"], TWIN, "{c}");
    assert_eq!(c["status"], "idle", "{c}");
    let stats: Value = client
        .get(format!("{base}/v1/arena/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["models"][0]["model"], TWIN, "{stats}");
    assert_eq!(stats["models"][0]["wins"], 1, "{stats}");
}
