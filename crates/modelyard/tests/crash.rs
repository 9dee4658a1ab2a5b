//! Crash and shutdown recovery of conversation turns, with the real
//! `modelyard serve` binary as a child process in front of an in-process
//! mock upstream: a SIGKILL mid-turn, then a restart on the same database,
//! closes the turn `interrupted` with its checkpointed text and loses or
//! repeats no committed event; a SIGTERM mid-turn does the same cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::{long_text, persisted, Dir, Ev, Server, Sse, LIMIT};
use modelyard_testkit::MockUpstream;
use serde_json::json;
use tokio::time::Instant;

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
