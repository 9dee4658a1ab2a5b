//! Routing over a fleet of mock upstreams: load balancing, retries,
//! `Retry-After`, cooldowns, fallbacks, conversation affinity and the
//! records of every attempt. Every case asserts what reached each mock.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::conv::*;
use common::TestServer;
use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions, MockUpstream};
use serde_json::{json, Value};

/// A mock upstream listing `models` (llama.cpp flavour).
async fn mock(models: &[&str]) -> MockUpstream {
    MockUpstream::start_with(MockOptions::new(
        Flavour::LlamaCpp,
        models
            .iter()
            .map(|m| MockModel::new(*m, Some(4096)))
            .collect(),
    ))
    .await
}

/// `[[providers]]` `name` at `url`, probed rarely (so routing, not
/// discovery, notices a failure).
fn provider(name: &str, url: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"llama-cpp\"\nbase_url = \"{url}\"\n\
         probe_interval_ms = 600000\n"
    )
}

async fn start(providers: &str, extra: &str) -> TestServer {
    TestServer::builder()
        .providers(providers)
        .extra(extra)
        .start()
        .await
}

/// Chat requests `mock` received.
fn chats(mock: &MockUpstream) -> Vec<Value> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json())
        .collect()
}

fn body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi there"}]})
}

/// Sends a chat request; returns status, `x-modelyard-model`,
/// `x-modelyard-attempts` and the body text.
async fn chat(server: &TestServer, body: &Value) -> (u16, String, String, String) {
    chat_with(server, body, None).await
}

async fn chat_with(
    server: &TestServer,
    body: &Value,
    affinity: Option<&str>,
) -> (u16, String, String, String) {
    let mut request = server
        .http
        .post(server.url("/v1/chat/completions"))
        .json(body);
    if let Some(key) = affinity {
        request = request.header("x-modelyard-affinity", key);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (model, attempts) = (header("x-modelyard-model"), header("x-modelyard-attempts"));
    let status = response.status().as_u16();
    (status, model, attempts, response.text().await.unwrap())
}

/// A TCP front for an upstream whose port can be closed (connections
/// refused, open ones reset) and opened again on the same port.
struct Switch {
    addr: SocketAddr,
    target: SocketAddr,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start(target: SocketAddr) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let switch = Switch {
            addr: listener.local_addr().unwrap(),
            target,
            tasks: Arc::default(),
        };
        switch.serve(listener);
        switch
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let (target, tasks) = (self.target, Arc::clone(&self.tasks));
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the port and resets every open connection.
    fn close(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    async fn open(&self) {
        let addr = self.addr;
        let listener = eventually(Duration::from_secs(5), "the port re-opens", || async move {
            let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
            socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
            socket.bind(addr).map_err(|e| e.to_string())?;
            socket.listen(64).map_err(|e| e.to_string())
        })
        .await;
        self.serve(listener);
    }
}

// ------------------------------------------------------------ balancing

#[tokio::test]
async fn round_robin_and_weighted_routes_split_300_requests_as_configured() {
    let (a, b) = (mock(&["echo"]).await, mock(&["echo"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        r#"
[[routes]]
name = "rr"
targets = ["a/echo", "b/echo"]
strategy = "round-robin"
affinity = "none"

[[routes]]
name = "weighted"
targets = [{ model = "a/echo", weight = 1 }, { model = "b/echo", weight = 2 }]
strategy = "weighted"
affinity = "none"
"#,
    )
    .await;
    for _ in 0..300 {
        let (status, served, attempts, text) = chat(&server, &body("rr", false)).await;
        assert_eq!(status, 200, "{text}");
        assert!(served == "a/echo" || served == "b/echo", "{served}");
        assert_eq!(attempts, "1");
        // The answer names the id the client sent.
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["model"], "rr");
    }
    let (na, nb) = (chats(&a).len(), chats(&b).len());
    assert!(
        (135..=165).contains(&na) && na + nb == 300,
        "a {na}, b {nb}"
    );

    for _ in 0..300 {
        let (status, _, _, text) = chat(&server, &body("weighted", false)).await;
        assert_eq!(status, 200, "{text}");
    }
    let (wa, wb) = (chats(&a).len() - na, chats(&b).len() - nb);
    assert!((90..=110).contains(&wa) && wa + wb == 300, "a {wa}, b {wb}");
    // Each deployment got its own upstream model name.
    assert!(chats(&a).iter().all(|c| c["model"] == "echo"));
}

#[tokio::test]
async fn least_busy_sends_new_requests_to_the_idle_deployment() {
    let (a, b) = (mock(&["slow:2000"]).await, mock(&["slow:2000"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        "[[routes]]\nname = \"lb\"\ntargets = [\"a/slow:2000\", \"b/slow:2000\"]\naffinity = \"none\"\n",
    )
    .await;
    // Three slow streams held open on deployment a, named directly.
    let mut held = Vec::new();
    for _ in 0..3 {
        let response = server.chat(&body("a/slow:2000", true)).await;
        assert_eq!(response.status(), 200);
        held.push(response);
    }
    assert_eq!(chats(&a).len(), 3);
    // Three concurrent route requests: all go to the idle b.
    let lb = body("lb", true);
    let requests = (0..3).map(|_| chat(&server, &lb));
    for (status, served, _, _) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200);
        assert_eq!(served, "b/slow:2000");
    }
    assert_eq!(
        chats(&a).len(),
        3,
        "nothing more reached the busy deployment"
    );
    assert_eq!(chats(&b).len(), 3);
    drop(held);
}

// ------------------------------------------------------------ failures

#[tokio::test]
async fn a_closed_port_is_cooled_down_skipped_and_tried_again_after_the_cooldown() {
    let (a, b) = (mock(&["echo"]).await, mock(&["echo"]).await);
    let switch = Switch::start(b.addr()).await;
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &switch.url())),
        r#"
[routing]
cooldown_failures = 3
cooldown_ms = 4000

[[routes]]
name = "pair"
targets = ["a/echo", "b/echo"]
strategy = "round-robin"
affinity = "none"
"#,
    )
    .await;
    switch.close();
    for i in 0..100 {
        let (status, served, attempts, text) = chat(&server, &body("pair", false)).await;
        assert_eq!(status, 200, "request {i}: {text}");
        assert_eq!(served, "a/echo", "request {i}");
        assert!(attempts == "1" || attempts == "2", "{attempts}");
    }
    assert_eq!(chats(&a).len(), 100);
    // b was tried until its third failure, then skipped: its connection
    // attempts stopped (each is in the call log).
    let calls = server.wait_calls(103).await;
    let failed_b: Vec<&Value> = calls.iter().filter(|c| c["modelId"] == "b/echo").collect();
    assert_eq!(failed_b.len(), 3, "{failed_b:#?}");
    assert!(failed_b
        .iter()
        .all(|c| c["status"] == "error" && c["attempt"] == 1 && c["route"] == "pair"));
    // The cooldown shows on the providers and the catalog.
    let providers = server.get_json("/v1/providers").await;
    let b_info = providers["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "b")
        .unwrap()
        .clone();
    assert_eq!(b_info["coolingDown"][0]["model"], "b/echo", "{b_info}");
    let catalog = server.get_json("/v1/catalog").await;
    let route = &catalog["routes"][0];
    assert_eq!(route["id"], "pair");
    assert_eq!(route["targets"][1]["status"], "cooling-down", "{route}");
    assert_eq!(route["targets"][0]["status"], "available", "{route}");

    // Back up: once the cooldown is over, b serves again.
    switch.open().await;
    let started = Instant::now();
    eventually(Duration::from_secs(10), "b serves again", || async {
        let (status, served, _, _) = chat(&server, &body("pair", false)).await;
        if status == 200 && served == "b/echo" {
            Ok(())
        } else {
            Err(served)
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(2_000),
        "not before the cooldown"
    );
    assert!(!chats(&b).is_empty());
}

#[tokio::test]
async fn a_429_with_retry_after_moves_to_the_other_target_at_once() {
    let (a, b) = (mock(&["status:429"]).await, mock(&["echo"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        "[[routes]]\nname = \"pair\"\ntargets = [\"a/status:429\", \"b/echo\"]\nstrategy = \"round-robin\"\naffinity = \"none\"\n",
    )
    .await;
    let started = Instant::now();
    for _ in 0..4 {
        let (status, served, _, text) = chat(&server, &body("pair", false)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(served, "b/echo");
    }
    // Not waited for: the other deployment answered at once, and a stays
    // out of rotation for its Retry-After (1 s), so it was asked once.
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert_eq!(chats(&a).len(), 1);
    assert_eq!(chats(&b).len(), 4);
}

#[tokio::test]
async fn a_lone_deployment_waits_a_short_retry_after_but_not_a_long_one() {
    let a = mock(&["fail-first:1@1", "status:429@60"]).await;
    let server = start(&provider("a", &a.base_url()), "").await;
    let started = Instant::now();
    let (status, served, attempts, text) = chat(&server, &body("a/fail-first:1@1", false)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        (served.as_str(), attempts.as_str()),
        ("a/fail-first:1@1", "2")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited Retry-After: 1"
    );
    assert_eq!(chats(&a).len(), 2);

    let started = Instant::now();
    let response = server.chat(&body("a/status:429@60", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "60");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Retry-After: 60 not waited for"
    );
    assert_eq!(chats(&a).len(), 3, "one attempt");
}

#[tokio::test]
async fn a_stream_that_drops_after_its_first_chunk_is_not_retried() {
    let (a, b) = (mock(&["drop"]).await, mock(&["drop"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        "[[routes]]\nname = \"pair\"\ntargets = [\"a/drop\", \"b/drop\"]\naffinity = \"none\"\n",
    )
    .await;
    let (status, _, attempts, text) = chat(&server, &body("pair", true)).await;
    assert_eq!(status, 200);
    assert_eq!(attempts, "1");
    assert!(text.contains("\"error\""), "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(chats(&a).len() + chats(&b).len(), 1);
    let call = server.only_call().await;
    assert_eq!(call["attempt"], 1);
    assert_eq!(call["status"], "error");
}

#[tokio::test]
async fn every_target_failing_falls_back_and_nothing_serving_is_a_503_with_reasons() {
    let a = mock(&["status:500", "status:503", "echo"]).await;
    let server = start(
        &provider("a", &a.base_url()),
        r#"
[routing]
backoff_ms = 1
cooldown_failures = 100

[[routes]]
name = "broken"
targets = ["a/status:500", "a/status:503"]
strategy = "round-robin"
affinity = "none"
fallbacks = ["rescue"]

[[routes]]
name = "rescue"
targets = ["a/echo"]

[[routes]]
name = "hopeless"
targets = ["a/status:500", "a/status:503"]
affinity = "none"
"#,
    )
    .await;
    let (status, served, attempts, text) = chat(&server, &body("broken", false)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(served, "a/echo");
    // Three attempts on the route (retries = 2), then the fallback.
    assert_eq!(attempts, "4");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["model"],
        "broken"
    );
    let models: Vec<String> = chats(&a)
        .iter()
        .map(|c| c["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models.len(), 4);
    assert_eq!(models[3], "echo");
    // One session, four calls, the last one ok.
    let calls = server.wait_calls(4).await;
    let sessions = server.get_json("/v1/llm-sessions").await;
    let session = &sessions["data"][0];
    assert_eq!(session["callCount"], 4, "{session}");
    assert_eq!(session["status"], "ok", "{session}");
    assert_eq!(session["modelId"], "a/echo", "{session}");
    let mut numbers: Vec<i64> = calls
        .iter()
        .map(|c| c["attempt"].as_i64().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4]);

    let (status, _, _, text) = chat(&server, &body("hopeless", false)).await;
    assert_eq!(status, 503, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["code"], "no_deployment_available");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("a/status:500") && message.contains("a/status:503"),
        "{message}"
    );
}

#[tokio::test]
async fn a_route_with_every_target_cooling_down_answers_503_with_retry_after_at_once() {
    let a = mock(&["status:500", "status:502"]).await;
    let server = start(
        &provider("a", &a.base_url()),
        r#"
[routing]
backoff_ms = 1
cooldown_failures = 1
cooldown_ms = 30000

[[routes]]
name = "hopeless"
targets = ["a/status:500", "a/status:502"]
affinity = "none"
"#,
    )
    .await;
    let (status, _, _, _) = chat(&server, &body("hopeless", false)).await;
    assert_eq!(status, 503);
    let before = chats(&a).len();
    assert_eq!(before, 2, "each target failed once and cooled down");
    let response = server.chat(&body("hopeless", false)).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let text = response.text().await.unwrap();
    assert!(text.contains("cooling down"), "{text}");
    assert_eq!(chats(&a).len(), before, "nothing was sent");
}

// ------------------------------------------------------------ affinity

#[tokio::test]
async fn a_conversation_stays_on_its_deployment_and_moves_when_it_goes_down() {
    let (a, b) = (mock(&["echo"]).await, mock(&["echo"]).await);
    let (sa, sb) = (Switch::start(a.addr()).await, Switch::start(b.addr()).await);
    let server = start(
        &(provider("a", &sa.url()) + &provider("b", &sb.url())),
        "[routing]\ncooldown_failures = 1\n\n[[routes]]\nname = \"pair\"\ntargets = [\"a/echo\", \"b/echo\"]\nstrategy = \"round-robin\"\n",
    )
    .await;
    let conv = create(&server, json!({"model": "pair"})).await;
    let other = create(&server, json!({"model": "pair"})).await;
    let served = |messages: &[Value]| -> Vec<String> {
        messages
            .iter()
            .filter(|m| m["role"] == "assistant")
            .map(|m| m["modelId"].as_str().unwrap().to_owned())
            .collect()
    };
    for i in 0..10 {
        let (_, turn) = run_turn(&server, &conv, json!({"content": format!("turn {i}")})).await;
        assert_eq!(turn["status"], "completed", "{turn}");
    }
    let first = served(&messages(&server, &conv).await);
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|m| *m == first[0]), "{first:?}");
    // The conversation keeps the route; answers name the deployment.
    assert_eq!(
        get(&server, &format!("/v1/conversations/{conv}")).await["model"],
        "pair"
    );

    // A second conversation goes to the other deployment.
    let (_, turn) = run_turn(&server, &other, json!({"content": "hello"})).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let second = served(&messages(&server, &other).await);
    assert_ne!(second[0], first[0]);

    // Its deployment goes down: the next turn moves, and later turns stay
    // on the new one even after the old one is back.
    let (down, up) = if first[0] == "a/echo" {
        (&sa, "b/echo")
    } else {
        (&sb, "a/echo")
    };
    down.close();
    let (_, turn) = run_turn(&server, &conv, json!({"content": "moved"})).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    down.open().await;
    for i in 0..3 {
        let (_, turn) = run_turn(&server, &conv, json!({"content": format!("after {i}")})).await;
        assert_eq!(turn["status"], "completed", "{turn}");
    }
    let all = served(&messages(&server, &conv).await);
    assert_eq!(all.len(), 14);
    assert!(all[10..].iter().all(|m| m == up), "{all:?}");
}

#[tokio::test]
async fn gateway_callers_keep_affinity_by_user_or_header() {
    let (a, b) = (mock(&["echo"]).await, mock(&["echo"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        "[[routes]]\nname = \"pair\"\ntargets = [\"a/echo\", \"b/echo\"]\nstrategy = \"round-robin\"\n",
    )
    .await;
    let mut by_user = Vec::new();
    let mut by_header = Vec::new();
    for _ in 0..10 {
        let mut request = body("pair", false);
        request["user"] = json!("user-1");
        by_user.push(chat(&server, &request).await.1);
        by_header.push(
            chat_with(&server, &body("pair", false), Some("agent-7"))
                .await
                .1,
        );
    }
    assert!(by_user.iter().all(|m| *m == by_user[0]), "{by_user:?}");
    assert!(
        by_header.iter().all(|m| *m == by_header[0]),
        "{by_header:?}"
    );
    // Without a key, round-robin spreads.
    let mut plain = Vec::new();
    for _ in 0..4 {
        plain.push(chat(&server, &body("pair", false)).await.1);
    }
    assert!(plain.contains(&"a/echo".to_owned()) && plain.contains(&"b/echo".to_owned()));
}

// ------------------------------------------------------------ everywhere an id works

#[tokio::test]
async fn a_route_is_listed_selectable_and_recorded_like_any_model_id() {
    let (a, b) = (mock(&["echo"]).await, mock(&["echo"]).await);
    let server = start(
        &(provider("a", &a.base_url()) + &provider("b", &b.base_url())),
        "[[routes]]\nname = \"pair\"\ntargets = [\"a/echo\", \"b/echo\"]\n",
    )
    .await;
    let models = server.get_json("/v1/models").await;
    let route = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "pair")
        .unwrap_or_else(|| panic!("{models}"))
        .clone();
    assert_eq!(route["owned_by"], "modelyard");
    assert_eq!(route["context_window"], 4096);

    // Selected for a conversation, favorited, used by a turn.
    let conv = create(&server, json!({})).await;
    let (status, _) = send(
        &server,
        "PUT",
        &format!("/v1/conversations/{conv}/model"),
        Some(json!({"model": "pair"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = send(
        &server,
        "PUT",
        "/v1/favorites",
        Some(json!({"favorites": ["pair"]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(catalog["favorites"][0]["id"], "pair", "{catalog}");
    let favorites = server.get_json("/v1/favorites").await;
    assert_eq!(favorites["data"][0]["visible"], true, "{favorites}");
    assert_eq!(favorites["data"][0]["provider"], Value::Null, "{favorites}");
    let (_, turn) = run_turn(&server, &conv, json!({"content": "hi"})).await;
    assert_eq!(turn["status"], "completed", "{turn}");
    let events = log(&server, &conv).await;
    let started = events.iter().find(|e| e.event == "turn.started").unwrap();
    assert_eq!(started.data["modelId"], "pair", "{:?}", started.data);
    let answer = events
        .iter()
        .find(|e| e.event == "message.assistant")
        .unwrap();
    let deployment = answer.data["modelId"].as_str().unwrap();
    assert!(
        deployment == "a/echo" || deployment == "b/echo",
        "{deployment}"
    );
    let calls = server.wait_calls(1).await;
    assert_eq!(calls[0]["route"], "pair");
    assert_eq!(calls[0]["modelId"], deployment);
}
