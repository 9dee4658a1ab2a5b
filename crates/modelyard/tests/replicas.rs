//! Two replicas of the built binary on one PostgreSQL database (`[cluster]`):
//! a turn running on one is seen, cancelled and, when its replica dies,
//! closed from the other; a replica that restarts leaves the other's turns
//! alone. Needs `MODELYARD_TEST_POSTGRES_URL` (skipped without it).

#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{
    conversation_usable, create_conversation, long_text, start_turn, Dir, Options, Server,
};
use futures_util::StreamExt;
use modelyard_testkit::{eventually, MockUpstream};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};

/// A fresh database on the test server; its URL.
async fn fresh_database() -> Option<String> {
    let Ok(url) = std::env::var("MODELYARD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: MODELYARD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let admin = PgConnectOptions::from_str(&url)
        .unwrap()
        .database("postgres");
    let name = format!("modelyard_rep_{}", uuid::Uuid::now_v7().simple());
    let mut conn = admin.connect().await.unwrap();
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap();
    let _ = conn.close().await;
    Some(admin.database(&name).to_url_lossy().to_string())
}

/// Replica `name` on `db`: 2 s turn leases, a sweeper every 500 ms.
async fn replica(name: &str, dir: &Dir, mock: &MockUpstream, db: &str) -> Server {
    Server::start_with(
        dir,
        mock,
        &Options {
            storage_url: Some(db.to_owned()),
            server: String::new(),
            extra: format!(
                "[turns]\nsweep_interval_ms = 500\n\n[cluster]\nreplica_id = \"{name}\"\n\
                 turn_lease_ms = 2000\n"
            ),
        },
    )
    .await
}

async fn status_of(server: &Server, conv: &str, turn: &str) -> String {
    let turns = server.get(&format!("/v1/conversations/{conv}/turns")).await;
    turns["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == turn)
        .map(|t| t["status"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_turn_on_one_replica_is_followed_and_cancelled_from_the_other() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["echo".into(), "slow:200".into()]));
    let (dir_a, dir_b) = (Dir::new("rep-a"), Dir::new("rep-b"));
    let a = replica("a", &dir_a, &mock, &db).await;
    let b = replica("b", &dir_b, &mock, &db).await;
    let conv = create_conversation(&a, "mock/echo").await;

    // A short turn on A: B's events feed gets every persisted event.
    let mut feed = b.events(&conv).await;
    let turn = start_turn(&a, &conv, "hello from a", Some("mock/echo")).await;
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = feed.next().await {
            if common::persisted(&e) {
                seen.push(e.event.clone());
                if e.event == "turn.completed" {
                    return e;
                }
            }
        }
        panic!("feed ended: {seen:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("B never saw A's turn end: {seen:?}"));
    assert_eq!(ended.data["turnId"], turn.as_str());
    assert!(seen.contains(&"message.assistant".to_owned()), "{seen:?}");

    // A slow turn on A, cancelled through B.
    let slow = start_turn(&a, &conv, &long_text(60), Some("mock/slow:200")).await;
    eventually(
        Duration::from_secs(5),
        "B sees the turn running",
        || async {
            match status_of(&b, &conv, &slow).await.as_str() {
                "running" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    )
    .await;
    let (status, body) = b
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns/{slow}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(5), "the turn is cancelled", || async {
        match status_of(&a, &conv, &slow).await.as_str() {
            "cancelled" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
}

#[tokio::test]
async fn tool_results_sent_to_the_other_replica_resume_the_turn() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["echo".into(), "tool-call:get_weather".into()]));
    let (dir_a, dir_b) = (Dir::new("rep-ta"), Dir::new("rep-tb"));
    let a = replica("a", &dir_a, &mock, &db).await;
    let b = replica("b", &dir_b, &mock, &db).await;
    let conv = create_conversation(&a, "mock/echo").await;
    let tools = serde_json::json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {}}}}]);
    // A's turn calls a client tool and waits.
    let (status, started) = a
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns"),
            Some(serde_json::json!({"content": "Weather?",
                "model": "mock/tool-call:get_weather", "tools": tools})),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let turn = started["turnId"].as_str().unwrap().to_owned();
    // B sees what the turn waits for...
    let call = eventually(Duration::from_secs(5), "B sees the turn wait", || async {
        let turns = b.get(&format!("/v1/conversations/{conv}/turns")).await;
        let t = &turns["data"][0];
        match (
            t["status"].as_str(),
            t["pendingToolCalls"][0]["id"].as_str(),
        ) {
            (Some("requires_action"), Some(id)) => Ok(id.to_owned()),
            _ => Err(t.to_string()),
        }
    })
    .await;
    // ... and takes the results: the turn runs on and completes, with the
    // client tools offered again.
    let (status, body) = b
        .send(
            reqwest::Method::POST,
            &format!("/v1/conversations/{conv}/turns/{turn}/tool-results"),
            Some(serde_json::json!({"results": [{"toolCallId": call, "content": "21 C"}]})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    eventually(Duration::from_secs(5), "the turn completes", || async {
        match status_of(&a, &conv, &turn).await.as_str() {
            "completed" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
    let last = mock.last_request().unwrap().json().unwrap();
    assert_eq!(last["tools"], tools);
    let messages = a.get(&format!("/v1/conversations/{conv}/messages")).await;
    let roles: Vec<&str> = messages["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"]);
}

#[tokio::test]
async fn a_dead_replicas_turn_is_interrupted_by_the_other_and_a_restart_spares_live_turns() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["echo".into(), "slow:200".into()]));
    let (dir_a, dir_b) = (Dir::new("rep-a"), Dir::new("rep-b"));
    let mut a = replica("a", &dir_a, &mock, &db).await;
    let mut b = replica("b", &dir_b, &mock, &db).await;
    let conv = create_conversation(&a, "mock/echo").await;

    // B restarts while A runs a turn: the turn is A's, alive, and finishes.
    let turn = start_turn(&a, &conv, &long_text(25), Some("mock/slow:200")).await;
    b.child.kill().unwrap();
    b.wait_exit().await;
    drop(b);
    let b2 = replica("b", &dir_b, &mock, &db).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(status_of(&b2, &conv, &turn).await, "running");
    let done = a.wait_turn(&conv, &turn).await;
    assert_eq!(done["status"], "completed", "{done}");

    // A dies mid-turn: once its lease has run out, B closes the turn with
    // its checkpointed text, and the conversation takes the next turn.
    let turn = start_turn(&a, &conv, &long_text(60), Some("mock/slow:200")).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    a.child.kill().unwrap();
    a.wait_exit().await;
    let closed = eventually(
        Duration::from_secs(8),
        "B closes the dead replica's turn",
        || async {
            match status_of(&b2, &conv, &turn).await.as_str() {
                "interrupted" => Ok(()),
                other => Err(other.to_owned()),
            }
        },
    );
    closed.await;
    let log = b2.log(&conv).await;
    let interrupted = log
        .iter()
        .find(|e| e.event == "turn.interrupted" && e.data["turnId"] == turn.as_str())
        .unwrap_or_else(|| panic!("{log:#?}"));
    let partial = interrupted.data["partialText"].as_str().unwrap_or_default();
    assert!(
        partial.starts_with("echo:"),
        "the checkpointed text is kept: {partial:?}"
    );
    conversation_usable(&b2, &conv).await;
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other_within_a_second() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let (dir_a, dir_b) = (Dir::new("rep-a"), Dir::new("rep-b"));
    let a = replica("a", &dir_a, &mock, &db).await;
    let b = replica("b", &dir_b, &mock, &db).await;
    let create = |bearer: Option<String>, role: &'static str| {
        let mut request = a
            .http
            .post(a.url("/v1/keys"))
            .json(&serde_json::json!({"role": role}));
        if let Some(key) = bearer {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 201);
            response.json::<serde_json::Value>().await.unwrap()
        }
    };
    let admin = create(None, "admin").await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let reader = create(Some(admin.clone()), "read").await;
    let (reader_id, reader_key) = (
        reader["id"].as_str().unwrap().to_owned(),
        reader["key"].as_str().unwrap().to_owned(),
    );
    let on_b = |key: String| {
        let request = b.http.get(b.url("/v1/conversations")).bearer_auth(key);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(on_b(reader_key.clone()).await, 200);
    let revoked = a
        .http
        .delete(a.url(&format!("/v1/keys/{reader_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(3), "B refuses the revoked key", || {
        let status = on_b(reader_key.clone());
        async move {
            match status.await {
                401 => Ok(()),
                other => Err(other),
            }
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "within about a second: {:?}",
        started.elapsed()
    );
}

/// A `nats-server` on its own port (the machine's Debian package), killed
/// on drop.
struct Nats {
    child: std::process::Child,
    port: u16,
}

impl Nats {
    fn start_on(port: u16) -> Option<Nats> {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(Nats { child, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn nats_replica(name: &str, dir: &Dir, mock: &MockUpstream, db: &str, nats: &str) -> Server {
    Server::start_with(
        dir,
        mock,
        &Options {
            storage_url: Some(db.to_owned()),
            server: String::new(),
            extra: format!(
                "[turns]\nsweep_interval_ms = 500\n\n[cluster]\nreplica_id = \"{name}\"\n\
                 turn_lease_ms = 2000\nnats_url = \"{nats}\"\n"
            ),
        },
    )
    .await
}

async fn events_mode(server: &Server) -> String {
    server.get("/health").await["events"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn with_nats_a_turns_deltas_reach_the_other_replica_and_nats_down_loses_nothing() {
    let Some(db) = fresh_database().await else {
        return;
    };
    let port = common::free_port();
    let Some(nats) = Nats::start_on(port) else {
        eprintln!("skipped: nats-server is not installed");
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_listed_models(Some(vec!["echo".into(), "slow:100".into()]));
    let (dir_a, dir_b) = (Dir::new("rep-a"), Dir::new("rep-b"));
    let a = nats_replica("a", &dir_a, &mock, &db, &nats.url()).await;
    let b = nats_replica("b", &dir_b, &mock, &db, &nats.url()).await;
    for server in [&a, &b] {
        eventually(Duration::from_secs(5), "connected to NATS", || async {
            match events_mode(server).await.as_str() {
                "nats" => Ok(()),
                other => Err(other.to_owned()),
            }
        })
        .await;
    }
    let conv = create_conversation(&a, "mock/echo").await;
    // What goes between replicas is on a subject that names the project:
    // `modelyard.<project>.conv.<conversation>`.
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut on_subject = watcher
        .subscribe(format!("modelyard.default.conv.{conv}"))
        .await
        .unwrap();
    watcher.flush().await.unwrap();

    // B follows a turn running on A, token by token.
    let mut feed = b.events(&conv).await;
    let turn = start_turn(&a, &conv, &long_text(20), Some("mock/slow:100")).await;
    let mut deltas = String::new();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = feed.next().await {
            if e.event == "text.delta" {
                deltas.push_str(e.data["delta"].as_str().unwrap_or_default());
            }
            if e.event == "message.assistant" {
                answer = e.data["parts"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            if e.event == "turn.completed" && e.data["turnId"] == turn.as_str() {
                return;
            }
        }
    })
    .await
    .expect("B saw the turn end");
    assert!(answer.starts_with("echo: w0"), "{answer}");
    assert_eq!(deltas, answer, "every delta reached B, in order");
    let first = tokio::time::timeout(Duration::from_secs(1), on_subject.next())
        .await
        .expect("a message on the project's subject")
        .unwrap();
    let first: serde_json::Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(first["origin"], "a", "{first}");
    drop(on_subject);

    // A subscriber on A moves to B in the middle of a turn running on A
    // (Last-Event-ID): no delta is missing, none comes twice.
    let mut feed = a.events(&conv).await;
    let turn = start_turn(&a, &conv, &long_text(30), Some("mock/slow:100")).await;
    let mut text = String::new();
    let mut last_id = None;
    let mut seen = 0;
    while let Some(e) = feed.next().await {
        if e.event == "text.delta" && e.data["turnId"] == turn.as_str() {
            text.push_str(e.data["delta"].as_str().unwrap_or_default());
            last_id = e.id.clone();
            seen += 1;
            if seen == 5 {
                break;
            }
        }
    }
    drop(feed);
    let last_id = last_id.expect("deltas carry ids");
    assert_eq!(
        last_id.split('.').count(),
        3,
        "a position inside the turn: {last_id}"
    );
    // B has been mirroring the turn, and A goes on streaming meanwhile.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut feed = b.events_after(&conv, Some(&last_id)).await;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = feed.next().await {
            if e.event == "text.delta" {
                text.push_str(e.data["delta"].as_str().unwrap_or_default());
            }
            if e.event == "message.assistant" {
                answer = e.data["parts"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
            if e.event == "turn.completed" && e.data["turnId"] == turn.as_str() {
                return;
            }
        }
    })
    .await
    .expect("B saw the turn end");
    assert!(answer.starts_with("echo: w0"), "{answer}");
    assert_eq!(text, answer, "deltas from A then B: no gap, no duplicate");

    // NATS goes away: nothing fails, persisted events still reach B.
    drop(nats);
    eventually(Duration::from_secs(5), "B notices NATS is gone", || async {
        match events_mode(&b).await.as_str() {
            "nats-disconnected" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
    let mut feed = b.events(&conv).await;
    let turn = start_turn(&a, &conv, "while nats is down", Some("mock/echo")).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(e) = feed.next().await {
            if e.event == "turn.completed" && e.data["turnId"] == turn.as_str() {
                return;
            }
        }
    })
    .await
    .expect("the turn's end reached B through the store");

    // NATS is back: the replicas reconnect by themselves.
    let _nats = Nats::start_on(port).expect("nats-server restarts");
    for server in [&a, &b] {
        eventually(Duration::from_secs(15), "reconnected to NATS", || async {
            match events_mode(server).await.as_str() {
                "nats" => Ok(()),
                other => Err(other.to_owned()),
            }
        })
        .await;
    }
}
