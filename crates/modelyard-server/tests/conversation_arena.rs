//! The arena inside a conversation (`POST /v1/conversations/{id}/arena`)
//! and picks: the models answer the next user message with the history as
//! context, the turn waits for a pick (no other turn meanwhile), the pick
//! becomes the turn's assistant message with its model and usage, the
//! unpicked answers stay readable, every pick counts in
//! `GET /v1/arena/stats`; standalone runs are picked too.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::conv::{log, Ev, Sse};
use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

async fn server() -> TestServer {
    TestServer::builder()
        .listed(&["echo", "mock-model", "status:400", "status:500"])
        .start()
        .await
}

/// `POST /v1/conversations/{conv}/arena` (JSON), asserting 200.
async fn arena(server: &TestServer, conv: &str, content: &str, models: &[&str]) -> Value {
    let (status, answer) = server
        .post(
            &format!("/v1/conversations/{conv}/arena"),
            json!({"content": content, "models": models}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// The conversation's turn `turn_id`.
async fn turn(server: &TestServer, conv: &str, turn_id: &str) -> Value {
    let turns = server
        .get_ok(&format!("/v1/conversations/{conv}/turns"))
        .await;
    turns["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == turn_id)
        .cloned()
        .unwrap_or_else(|| panic!("turn {turn_id} in {turns}"))
}

fn pick_path(conv: &str, run: &str) -> String {
    format!("/v1/conversations/{conv}/arena/{run}/pick")
}

fn of_type<'a>(events: &'a [Ev], kind: &str) -> Vec<&'a Ev> {
    events.iter().filter(|e| e.event == kind).collect()
}

#[tokio::test]
async fn two_models_answer_with_the_history_and_the_pick_completes_the_turn() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    server
        .run_turn(&conv, json!({"content": "first", "model": "mock/echo"}))
        .await;
    let before = server.get_ok(&format!("/v1/conversations/{conv}")).await;

    let answer = arena(&server, &conv, "second", &["mock/echo", "mock/mock-model"]).await;
    let run = answer["runId"].as_str().unwrap().to_owned();
    let turn_id = answer["turnId"].as_str().unwrap().to_owned();
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{answer}");
    for (result, model) in results.iter().zip(["mock/echo", "mock/mock-model"]) {
        assert_eq!(result["model"], model, "{result}");
        assert_eq!(result["status"], "completed", "{result}");
        assert_eq!(result["text"], "echo: second", "{result}");
    }
    // Each model got the history, then the new message.
    let chats = server.mock_chats();
    for body in &chats[chats.len() - 2..] {
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "echo: first"},
                {"role": "user", "content": "second"},
            ]),
            "{body}"
        );
    }
    // The log: the turn, its message, the run's start and end.
    let events = log(&server, &conv).await;
    let started = of_type(&events, "arena.started");
    assert_eq!(started.len(), 1, "{events:?}");
    assert_eq!(started[0].data["runId"], run.as_str());
    assert_eq!(started[0].data["turnId"], turn_id.as_str());
    assert_eq!(
        started[0].data["models"],
        json!(["mock/echo", "mock/mock-model"])
    );
    let completed = of_type(&events, "arena.completed");
    assert_eq!(completed.len(), 1, "{events:?}");
    assert_eq!(completed[0].data["results"][1]["model"], "mock/mock-model");
    assert_eq!(completed[0].data["results"][1]["status"], "completed");
    assert_eq!(completed[0].data["results"][1]["text"], "echo: second");
    assert!(
        of_type(&events, "turn.completed").len() == 1,
        "only the first turn ended"
    );
    // The turn waits for the pick; nothing else may start meanwhile.
    assert_eq!(
        turn(&server, &conv, &turn_id).await["status"],
        "awaiting_pick"
    );
    // The conversation says so, and names the run, read alone or listed.
    let waiting = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(waiting["status"], "awaiting_pick", "{waiting}");
    assert_eq!(waiting["runningTurnId"], turn_id.as_str(), "{waiting}");
    assert_eq!(
        waiting["pendingArena"],
        json!({"runId": run, "turnId": turn_id}),
        "{waiting}"
    );
    let listed = server.get_ok("/v1/conversations").await;
    let listed = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == conv.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "awaiting_pick", "{listed}");
    assert_eq!(listed["pendingArena"]["runId"], run.as_str(), "{listed}");
    let refused = server
        .problem(
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": "third", "model": "mock/echo"})),
            409,
            "arena_pick_pending",
        )
        .await;
    assert!(
        refused["detail"].as_str().unwrap().contains(&run),
        "names the run: {refused}"
    );
    assert_eq!(refused["runId"], run.as_str(), "{refused}");
    assert_eq!(refused["turnId"], turn_id.as_str(), "{refused}");
    server
        .problem(
            "POST",
            &format!("/v1/conversations/{conv}/arena"),
            Some(json!({"content": "third", "models": ["mock/echo", "mock/mock-model"]})),
            409,
            "arena_pick_pending",
        )
        .await;
    let read = server
        .get_ok(&format!("/v1/conversations/{conv}/arena/{run}"))
        .await;
    assert_eq!(read["picked"], Value::Null, "{read}");
    assert_eq!(read["turnId"], turn_id.as_str());
    assert_eq!(read["results"].as_array().unwrap().len(), 2, "{read}");

    // The pick.
    let (status, picked) = server
        .post(&pick_path(&conv, &run), json!({"model": "mock/mock-model"}))
        .await;
    assert_eq!(status, 200, "{picked}");
    assert_eq!(picked["model"], "mock/mock-model");
    assert_eq!(picked["turnId"], turn_id.as_str());
    let message = &picked["message"];
    assert_eq!(message["role"], "assistant", "{picked}");
    assert_eq!(message["content"], "echo: second");
    assert_eq!(message["modelId"], "mock/mock-model");
    let usage = &results[1]["usage"];
    assert_eq!(message["usage"]["promptTokens"], usage["promptTokens"]);
    assert_eq!(
        message["usage"]["completionTokens"],
        usage["completionTokens"]
    );
    assert_eq!(turn(&server, &conv, &turn_id).await["status"], "completed");
    let after = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(after["latestModelId"], "mock/mock-model", "{after}");
    assert_eq!(after["status"], "idle", "{after}");
    assert_eq!(after["pendingArena"], Value::Null, "{after}");
    assert_eq!(after["runningTurnId"], Value::Null, "{after}");
    assert_eq!(
        after["usage"]["totalTokens"].as_u64().unwrap(),
        before["usage"]["totalTokens"].as_u64().unwrap() + usage["totalTokens"].as_u64().unwrap(),
        "the picked answer counts, the other does not: {after}"
    );
    // Once only.
    server
        .problem(
            "POST",
            &pick_path(&conv, &run),
            Some(json!({"model": "mock/echo"})),
            409,
            "arena_already_picked",
        )
        .await;
    // The unpicked answer stays readable.
    let read = server
        .get_ok(&format!("/v1/conversations/{conv}/arena/{run}"))
        .await;
    assert_eq!(read["picked"], "mock/mock-model", "{read}");
    assert_eq!(read["results"][0]["text"], "echo: second", "{read}");
    // The conversation goes on with the picked answer in its history.
    server
        .run_turn(&conv, json!({"content": "third", "model": "mock/echo"}))
        .await;
    let last = server.mock_chats().pop().unwrap();
    assert_eq!(
        last["messages"][3],
        json!({"role": "assistant", "content": "echo: second"})
    );
    // The pick counts in the stats.
    let stats = server.get_ok("/v1/arena/stats").await;
    assert_eq!(
        stats["models"],
        json!([
            {"model": "mock/mock-model", "wins": 1, "appearances": 1, "winRate": 1.0},
            {"model": "mock/echo", "wins": 0, "appearances": 1, "winRate": 0.0},
        ]),
        "{stats}"
    );
}

#[tokio::test]
async fn a_pick_names_a_completed_answer_of_a_known_run() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    let answer = arena(&server, &conv, "hi", &["mock/status:400", "mock/echo"]).await;
    let run = answer["runId"].as_str().unwrap();
    assert_eq!(answer["results"][0]["status"], "failed", "{answer}");
    for model in ["mock/status:400", "mock/nope"] {
        let problem = server
            .problem(
                "POST",
                &pick_path(&conv, run),
                Some(json!({"model": model})),
                422,
                "invalid_field",
            )
            .await;
        assert_eq!(problem["field"], "model", "{problem}");
    }
    server
        .problem(
            "POST",
            &pick_path(&conv, "0190b7a2-0000-7000-8000-000000000000"),
            Some(json!({"model": "mock/echo"})),
            404,
            "arena_run_not_found",
        )
        .await;
    let (status, picked) = server
        .post(&pick_path(&conv, run), json!({"model": "mock/echo"}))
        .await;
    assert_eq!(status, 200, "{picked}");
    // The failed model did not appear: only the compared answers count.
    let stats = server.get_ok("/v1/arena/stats").await;
    assert_eq!(
        stats["models"],
        json!([{"model": "mock/echo", "wins": 1, "appearances": 1, "winRate": 1.0}])
    );
}

#[tokio::test]
async fn when_every_model_fails_the_turn_fails_and_nothing_waits() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    let answer = arena(
        &server,
        &conv,
        "hi",
        &["mock/status:400", "mock/status:500"],
    )
    .await;
    let run = answer["runId"].as_str().unwrap();
    let turn_id = answer["turnId"].as_str().unwrap();
    assert!(
        answer["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "failed"),
        "{answer}"
    );
    let failed = turn(&server, &conv, turn_id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "idle", "{c}");
    assert_eq!(c["pendingArena"], Value::Null, "{c}");
    let events = log(&server, &conv).await;
    assert_eq!(of_type(&events, "arena.completed").len(), 1);
    assert_eq!(of_type(&events, "turn.failed").len(), 1);
    server
        .problem(
            "POST",
            &pick_path(&conv, run),
            Some(json!({"model": "mock/status:400"})),
            409,
            "arena_not_awaiting_pick",
        )
        .await;
    // No pick pending: the conversation goes on.
    server
        .run_turn(&conv, json!({"content": "again", "model": "mock/echo"}))
        .await;
}

#[tokio::test]
async fn a_streamed_conversation_arena_feeds_deltas_then_done_with_the_turn() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    let response = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/arena")))
        .json(
            &json!({"content": "one two three", "models": ["mock/echo", "mock/mock-model"],
                      "stream": true}),
        )
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(response);
    let events = sse.until(|e| e.event == "arena.done").await;
    assert!(sse.next().await.is_none(), "nothing after arena.done");
    let done = events.last().unwrap();
    let run = done.data["id"].as_str().unwrap();
    let turn_id = done.data["turnId"].as_str().unwrap();
    assert!(!of_type(&events, "arena.delta").is_empty(), "{events:?}");
    let completed = of_type(&events, "arena.completed");
    assert_eq!(completed.len(), 2, "{events:?}");
    assert_eq!(completed[0].data["text"], "echo: one two three");
    // The run is committed by the time `arena.done` arrives.
    assert_eq!(
        turn(&server, &conv, turn_id).await["status"],
        "awaiting_pick"
    );
    let (status, picked) = server
        .post(&pick_path(&conv, run), json!({"model": "mock/echo"}))
        .await;
    assert_eq!(status, 200, "{picked}");
}

#[tokio::test]
async fn invalid_conversation_arenas_are_problems() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    let path = format!("/v1/conversations/{conv}/arena");
    for (body, field) in [
        (json!({"content": "x", "models": ["mock/echo"]}), "models"),
        (
            json!({"content": "x", "models": ["mock/echo", "mock/echo"]}),
            "models",
        ),
        (
            json!({"content": "x", "models": ["mock/echo", "mock/unknown-model"]}),
            "models",
        ),
        (
            json!({"content": " ", "models": ["mock/echo", "mock/mock-model"]}),
            "content",
        ),
        (
            json!({"content": "x", "models": ["mock/echo", "mock/mock-model"],
                   "options": {"n": 2}}),
            "options.n",
        ),
    ] {
        let (status, problem) = server.post(&path, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
    server
        .problem(
            "POST",
            "/v1/conversations/0190b7a2-0000-7000-8000-000000000000/arena",
            Some(json!({"content": "x", "models": ["mock/echo", "mock/mock-model"]})),
            404,
            "conversation_not_found",
        )
        .await;
    // Nothing was appended or sent.
    assert!(server.mock_chats().is_empty());
    let events = log(&server, &conv).await;
    assert_eq!(events.len(), 1, "{events:?}");
}

#[tokio::test]
async fn a_pending_pick_can_be_cancelled() {
    let server = server().await;
    let conv = server.create_conversation(json!({})).await;
    let answer = arena(&server, &conv, "hi", &["mock/echo", "mock/mock-model"]).await;
    let turn_id = answer["turnId"].as_str().unwrap();
    let (status, body) = server
        .post(
            &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
            json!({}),
        )
        .await;
    assert!(status < 300, "{status}: {body}");
    assert_eq!(turn(&server, &conv, turn_id).await["status"], "cancelled");
    let c = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(c["status"], "idle", "{c}");
    assert_eq!(c["pendingArena"], Value::Null, "{c}");
    server
        .run_turn(&conv, json!({"content": "again", "model": "mock/echo"}))
        .await;
}

#[tokio::test]
async fn a_standalone_run_is_picked_once_and_counts() {
    let server = server().await;
    let (status, answer) = server
        .post(
            "/v1/arena",
            json!({"models": ["mock/echo", "mock/mock-model", "mock/status:400"],
                   "prompt": "hi"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let run = answer["id"].as_str().unwrap();
    let path = format!("/v1/arena/{run}/pick");
    let problem = server
        .problem(
            "POST",
            &path,
            Some(json!({"model": "mock/status:400"})),
            422,
            "invalid_field",
        )
        .await;
    assert_eq!(problem["field"], "model", "{problem}");
    let (status, picked) = server.post(&path, json!({"model": "mock/echo"})).await;
    assert_eq!(status, 200, "{picked}");
    assert_eq!(picked["model"], "mock/echo");
    assert_eq!(picked["others"], json!(["mock/mock-model"]));
    server
        .problem(
            "POST",
            &path,
            Some(json!({"model": "mock/mock-model"})),
            409,
            "arena_already_picked",
        )
        .await;
    server
        .problem(
            "POST",
            "/v1/arena/0190b7a2-0000-7000-8000-000000000000/pick",
            Some(json!({"model": "mock/echo"})),
            404,
            "arena_run_not_found",
        )
        .await;
    let stats = eventually(LIMIT, "the pick in the stats", || async {
        let stats = server.get_ok("/v1/arena/stats").await;
        if stats["models"].as_array().unwrap().len() == 2 {
            Ok(stats)
        } else {
            Err(stats)
        }
    })
    .await;
    assert_eq!(stats["models"][0]["model"], "mock/echo", "{stats}");
    assert_eq!(stats["models"][0]["wins"], 1, "{stats}");
    assert_eq!(stats["models"][1]["model"], "mock/mock-model", "{stats}");
    assert_eq!(stats["models"][1]["appearances"], 1, "{stats}");
    // `since` after the pick leaves it out; a bad time is a 400.
    let later = server
        .get_ok("/v1/arena/stats?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(later["models"], json!([]));
    let (status, _) = server
        .send("GET", "/v1/arena/stats?since=yesterday", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn cancelling_a_running_conversation_arena_stops_its_models() {
    let server = TestServer::builder()
        .listed(&["echo", "hang"])
        .start()
        .await;
    let conv = server.create_conversation(json!({})).await;
    let path = format!("/v1/conversations/{conv}/arena");
    let request = server
        .http
        .post(server.url(&path))
        .json(&json!({"content": "wait", "models": ["mock/hang", "mock/echo"]}))
        .send();
    let cancel = async {
        let turn_id = eventually(LIMIT, "the arena turn running", || async {
            let turns = server
                .get_ok(&format!("/v1/conversations/{conv}/turns"))
                .await;
            match turns["data"].as_array().unwrap().first() {
                Some(t) if t["status"] == "running" => Ok(t["id"].as_str().unwrap().to_owned()),
                _ => Err(turns),
            }
        })
        .await;
        // The hanging model was called before the cancel.
        eventually(LIMIT, "both models called", || async {
            let n = server.mock_chats().len();
            if n == 2 {
                Ok(())
            } else {
                Err(n)
            }
        })
        .await;
        let (status, body) = server
            .post(
                &format!("/v1/conversations/{conv}/turns/{turn_id}/cancel"),
                json!({}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        turn_id
    };
    let (response, turn_id) = tokio::join!(request, cancel);
    let response = response.unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["results"][0]["status"], "failed", "{answer}");
    assert_eq!(answer["results"][0]["error"], "cancelled", "{answer}");
    assert_eq!(turn(&server, &conv, &turn_id).await["status"], "cancelled");
    eventually(LIMIT, "the hanging request dropped", || async {
        let n = server.mock.cancelled_requests();
        if n >= 1 {
            Ok(())
        } else {
            Err(n)
        }
    })
    .await;
    // Nothing waits: the conversation goes on.
    server
        .run_turn(&conv, json!({"content": "again", "model": "mock/echo"}))
        .await;
}

#[tokio::test]
async fn with_the_error_context_strategy_a_message_too_long_for_a_model_is_refused() {
    use common::named_mock_url;
    use modelyard_testkit::{Flavour, MockModel, MockOptions};
    let mock = MockOptions::new(
        Flavour::LlamaCpp,
        vec![
            MockModel::new("echo", Some(400)),
            MockModel::new("other", Some(4_000)),
        ],
    );
    let server = TestServer::builder()
        .mock("small", mock)
        .providers(&format!(
            "[[providers]]\nname = \"small\"\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n",
            named_mock_url("small")
        ))
        .extra("[turns]\noutput_reserve_tokens = 100\ncontext_strategy = \"error\"\n")
        .start()
        .await;
    let conv = server.create_conversation(json!({})).await;
    let path = format!("/v1/conversations/{conv}/arena");
    let long: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
    let problem = server
        .problem(
            "POST",
            &path,
            Some(json!({"content": long.join(" "), "models": ["small/other", "small/echo"]})),
            422,
            "context_length_exceeded",
        )
        .await;
    assert_eq!(problem["contextWindow"], 400, "{problem}");
    assert_eq!(log(&server, &conv).await.len(), 1, "nothing appended");
    // A message that fits every model runs.
    let (status, answer) = server
        .post(
            &path,
            json!({"content": "short", "models": ["small/other", "small/echo"]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
}

/// Each model's text from the `arena.delta` events of `events`, by model.
fn deltas_by_model(events: &[Ev]) -> std::collections::BTreeMap<String, String> {
    let mut joined = std::collections::BTreeMap::<String, String>::new();
    for e in of_type(events, "arena.delta") {
        joined
            .entry(e.data["model"].as_str().unwrap().to_owned())
            .or_default()
            .push_str(e.data["delta"].as_str().unwrap());
    }
    joined
}

/// The run's end in the log (not a model's end, which has no `seq`).
fn run_end(e: &Ev) -> bool {
    e.event == "arena.completed" && e.persisted()
}

#[tokio::test]
async fn a_watcher_of_the_conversation_sees_every_models_deltas_as_they_come() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:30", "slow:45"])
        .start()
        .await;
    let conv = server.create_conversation(json!({})).await;
    let models = ["mock/slow:30", "mock/slow:45"];
    let mut watcher = Sse::open(&server, &conv, None).await;
    watcher.replay().await;
    let path = format!("/v1/conversations/{conv}/arena");
    let post = server.post(
        &path,
        json!({"content": "one two three four five", "models": models}),
    );
    let ((status, answer), events) = tokio::join!(post, watcher.until(run_end));
    assert_eq!(status, 200, "{answer}");
    let (run, turn_id) = (&answer["runId"], &answer["turnId"]);
    // The turn's start up to `arena.started` (stored), the models' live
    // progress, the run's end.
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(
        kinds[..3],
        ["turn.started", "message.user", "arena.started"],
        "{events:?}"
    );
    assert!(events[..3].iter().all(Ev::persisted));
    let live = &events[3..events.len() - 1];
    assert!(
        live.iter().all(Ev::transient),
        "only live events before the run's end: {live:?}"
    );
    for e in live.iter().filter(|e| e.event.starts_with("arena.")) {
        assert_eq!(&e.data["runId"], run, "{e:?}");
        assert_eq!(&e.data["turnId"], turn_id, "{e:?}");
        assert!(models.contains(&e.data["model"].as_str().unwrap()), "{e:?}");
    }
    // Both models streamed, each its own text, each ended before the run.
    let text = "echo: one two three four five";
    let joined = deltas_by_model(&events);
    assert_eq!(joined.len(), 2, "{events:?}");
    for model in models {
        assert_eq!(joined[model], text, "{model}: {events:?}");
        let end = live
            .iter()
            .position(|e| e.event == "arena.completed" && e.data["model"] == model)
            .unwrap_or_else(|| panic!("{model} ended: {live:?}"));
        assert_eq!(live[end].data["text"], text);
        assert!(
            live[end + 1..]
                .iter()
                .all(|e| e.event != "arena.delta" || e.data["model"] != model),
            "no delta of {model} after its end"
        );
    }
    let end = events.last().unwrap();
    assert_eq!(&end.data["runId"], run);
    assert_eq!(end.data["results"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_failed_model_is_on_the_feed_too() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:30", "status:500"])
        .start()
        .await;
    let conv = server.create_conversation(json!({})).await;
    let mut watcher = Sse::open(&server, &conv, None).await;
    watcher.replay().await;
    let path = format!("/v1/conversations/{conv}/arena");
    let post = server.post(
        &path,
        json!({"content": "hi there", "models": ["mock/slow:30", "mock/status:500"]}),
    );
    let ((status, answer), events) = tokio::join!(post, watcher.until(run_end));
    assert_eq!(status, 200, "{answer}");
    let failed = of_type(&events, "arena.failed");
    assert_eq!(failed.len(), 1, "{events:?}");
    assert!(failed[0].transient());
    assert_eq!(failed[0].data["model"], "mock/status:500");
    assert!(failed[0].data["error"].is_string(), "{:?}", failed[0]);
    assert_eq!(deltas_by_model(&events)["mock/slow:30"], "echo: hi there");
}

#[tokio::test]
async fn a_watcher_that_reconnects_mid_run_loses_and_repeats_nothing() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:150", "slow:160"])
        .start()
        .await;
    let conv = server.create_conversation(json!({})).await;
    let models = ["mock/slow:150", "mock/slow:160"];
    let mut first = Sse::open(&server, &conv, None).await;
    let before = first.replay().await;
    let path = format!("/v1/conversations/{conv}/arena");
    let post = server.post(
        &path,
        json!({"content": "one two three four five", "models": models}),
    );
    let watch = async {
        // A few deltas, then the connection drops.
        let mut seen = Vec::new();
        while of_type(&seen, "arena.delta").len() < 3 {
            seen.push(first.next_some().await);
        }
        drop(first);
        let last_id = seen.iter().rev().find_map(|e| e.id.clone()).unwrap();
        let mut again = Sse::open(&server, &conv, Some(&last_id)).await;
        let rest = again.until(run_end).await;
        (seen, last_id, rest)
    };
    let ((status, answer), (seen, last_id, rest)) = tokio::join!(post, watch);
    assert_eq!(status, 200, "{answer}");
    assert!(
        last_id.split('.').count() == 3,
        "resumed inside the run: {last_id}"
    );
    // Every stored event once, in order.
    let seqs: Vec<i64> = before
        .iter()
        .chain(&seen)
        .chain(&rest)
        .filter(|e| e.persisted())
        .map(Ev::seq)
        .collect();
    let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
    assert_eq!(seqs, expected, "{seen:?} {rest:?}");
    // No transient event twice.
    let ids: Vec<&String> = seen
        .iter()
        .chain(&rest)
        .filter(|e| e.transient())
        .map(|e| e.id.as_ref().unwrap())
        .collect();
    let distinct: std::collections::BTreeSet<&String> = ids.iter().copied().collect();
    assert_eq!(ids.len(), distinct.len(), "{ids:?}");
    // Each model's text, joined over both connections, is whole.
    let all: Vec<Ev> = seen.iter().chain(&rest).cloned().collect();
    let joined = deltas_by_model(&all);
    for model in models {
        assert_eq!(
            joined[model], "echo: one two three four five",
            "{model}: {all:?}"
        );
    }
}

// ------------------------------------------------------- context windows

/// The small window of `small/echo`, tokens (the mock counts words).
const SMALL_WINDOW: u64 = 400;
/// The larger window of `big/wide`, tokens.
const WIDE_WINDOW: u64 = 1_200;
/// `[turns] output_reserve_tokens` of the context tests.
const RESERVE: u64 = 100;

/// A server whose llama.cpp providers `small` and `big` serve `echo`
/// (window [`SMALL_WINDOW`]) and `wide` (window [`WIDE_WINDOW`]), both
/// refusing a prompt that reaches its window; `[turns]` gets `turns`.
async fn small_windows(turns: &str) -> TestServer {
    use common::named_mock_url;
    use modelyard_testkit::{Flavour, MockModel, MockOptions};
    let mock = |model: &str, window: u64| {
        MockOptions::new(Flavour::LlamaCpp, vec![MockModel::new(model, Some(window))])
    };
    let server = TestServer::builder()
        .mock("small", mock("echo", SMALL_WINDOW))
        .mock("big", mock("wide", WIDE_WINDOW))
        .providers(&format!(
            "[[providers]]\nname = \"small\"\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n\n\
             [[providers]]\nname = \"big\"\nkind = \"llama-cpp\"\nbase_url = \"{}\"\n",
            named_mock_url("small"),
            named_mock_url("big")
        ))
        .extra(&format!(
            "[turns]\noutput_reserve_tokens = {RESERVE}\n{turns}\n"
        ))
        .start()
        .await;
    server.named("small").set_enforce_context(true);
    server.named("big").set_enforce_context(true);
    server
}

/// A 40-word question, different for each `n`.
fn question(n: usize) -> String {
    (0..40)
        .map(|i| format!("q{n}w{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A conversation on `big/wide` with `turns` turns of a 40-word question
/// (and its 41-word echo); its compactions answer at most 20 words.
async fn long_conversation(server: &TestServer, turns: usize) -> String {
    let (status, config) = server
        .post(
            "/v1/llms",
            json!({"displayName": "short summaries", "model": "big/wide",
                   "providerOptions": {"maxTokens": 20}}),
        )
        .await;
    assert_eq!(status, 201, "{config}");
    let conv = server
        .create_conversation(
            json!({"model": "big/wide", "llmOverrides": {"compaction": config["id"]}}),
        )
        .await;
    for n in 0..turns {
        let (_, turn) = server
            .run_turn(&conv, json!({"content": question(n)}))
            .await;
        assert_eq!(turn["status"], "completed", "turn {n}: {turn}");
    }
    conv
}

/// The streamed chat requests mock `provider` received.
fn streamed_to(server: &TestServer, provider: &str) -> Vec<Value> {
    server
        .named(provider)
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .filter_map(|r| r.json())
        .filter(|r| r["stream"] == json!(true))
        .collect()
}

/// Words of a chat request's messages: the mock's prompt tokens.
fn prompt_words(request: &Value) -> u64 {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["content"]
                .as_str()
                .map_or(0, |s| s.split_whitespace().count()) as u64
        })
        .sum()
}

#[tokio::test]
async fn with_truncate_each_model_gets_the_history_that_fits_its_own_window() {
    let server = small_windows("context_strategy = \"truncate\"").await;
    // 6 turns and the new question: about 530 words, more than `echo`'s
    // 300-token budget, well within `wide`'s 1 100.
    let conv = long_conversation(&server, 6).await;
    let answer = arena(&server, &conv, &question(9), &["small/echo", "big/wide"]).await;
    for result in answer["results"].as_array().unwrap() {
        assert_eq!(result["status"], "completed", "{result}");
    }
    let small = streamed_to(&server, "small");
    let wide = streamed_to(&server, "big");
    let (small, wide) = (small.last().unwrap(), wide.last().unwrap());
    // Both end with the new question; `echo`'s leaves the oldest out and
    // fits its window minus the reserve, `wide`'s has the whole history.
    for request in [small, wide] {
        let messages = request["messages"].as_array().unwrap();
        assert_eq!(
            messages.last().unwrap()["content"],
            question(9),
            "{request}"
        );
        assert_eq!(messages.last().unwrap()["role"], "user");
    }
    assert!(
        prompt_words(small) <= SMALL_WINDOW - RESERVE,
        "{} words: {small}",
        prompt_words(small)
    );
    assert_eq!(wide["messages"].as_array().unwrap().len(), 13, "{wide}");
    assert_eq!(wide["messages"][0]["content"], question(0));
    let kept = small["messages"].as_array().unwrap();
    assert!(kept.len() < 13 && kept.len() > 1, "{small}");
    assert_ne!(kept[0]["content"], question(0), "the oldest went first");
    // Nothing was compacted or dropped from the conversation itself.
    let events = log(&server, &conv).await;
    assert!(of_type(&events, "conversation.compacted").is_empty());
    assert_eq!(server.messages(&conv).await.len(), 13);
}

#[tokio::test]
async fn with_compact_the_conversation_is_compacted_once_then_every_model_answers() {
    let server = small_windows("").await;
    // 3 turns and the new question: about 280 words, past 0.8 of `echo`'s
    // 300-token budget (not of `wide`'s 1 100).
    let conv = long_conversation(&server, 3).await;
    assert!(of_type(&log(&server, &conv).await, "conversation.compacted").is_empty());
    let answer = arena(&server, &conv, &question(9), &["small/echo", "big/wide"]).await;
    for result in answer["results"].as_array().unwrap() {
        assert_eq!(result["status"], "completed", "{result}");
    }
    // One compaction, recorded as a turn's, before the arena's turn.
    let events = log(&server, &conv).await;
    let compacted = of_type(&events, "conversation.compacted");
    assert_eq!(compacted.len(), 1, "{events:?}");
    assert_eq!(compacted[0].data["modelId"], "big/wide");
    let started = of_type(&events, "arena.started");
    assert!(compacted[0].seq() < started[0].seq(), "{events:?}");
    // Both models got the summary in place of the history, then the
    // question.
    for provider in ["small", "big"] {
        let request = streamed_to(&server, provider).last().cloned().unwrap();
        let messages = request["messages"].as_array().unwrap();
        assert!(
            messages[0]["content"]
                .as_str()
                .unwrap()
                .starts_with("Summary of the earlier conversation: "),
            "{request}"
        );
        assert_eq!(messages.len(), 2, "{request}");
        assert_eq!(messages[1]["content"], question(9));
    }
    let sessions = server
        .get_ok(&format!("/v1/llm-sessions?conversationId={conv}&limit=100"))
        .await;
    let compactions = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["operation"] == "compaction")
        .count();
    assert_eq!(compactions, 1, "{sessions}");
}

/// `GET /v1/llm-sessions/{id}` once the session is recorded.
async fn session(server: &TestServer, id: &str) -> Value {
    eventually(LIMIT, &format!("session {id} recorded"), || async move {
        let (status, body) = server
            .send("GET", &format!("/v1/llm-sessions/{id}"), None)
            .await;
        if status == 200 {
            Ok(body)
        } else {
            Err((status, body))
        }
    })
    .await
}

#[tokio::test]
async fn an_arena_runs_session_records_the_config_it_ran_with() {
    let server = server().await;
    let (status, config) = server
        .post(
            "/v1/llms",
            json!({"model": "mock/echo", "systemPrompt": "BE BRIEF",
                   "providerOptions": {"temperature": 0.3}}),
        )
        .await;
    assert_eq!(status, 201, "{config}");
    let cfg = config["id"].as_str().unwrap().to_owned();
    let conv = server.create_conversation(json!({"llmId": cfg})).await;
    let answer = arena(&server, &conv, "hi", &["mock/echo", "mock/mock-model"]).await;
    let run = answer["runId"].as_str().unwrap();
    let detail = session(&server, run).await;
    assert_eq!(detail["operation"], "arena", "{detail}");
    let snapshot = &detail["config"];
    assert_eq!(snapshot["llmId"], cfg.as_str(), "{detail}");
    assert_eq!(snapshot["version"], 1);
    assert_eq!(snapshot["systemPrompt"], "BE BRIEF");
    assert_eq!(snapshot["providerOptions"]["temperature"], 0.3);
    assert_eq!(snapshot["resolvedFrom"], "request");
    assert_eq!(snapshot["model"], "mock/echo, mock/mock-model");

    // The standalone arena with `llmId` records it too (nothing resolved
    // in a conversation); without one, no config.
    let (status, standalone) = server
        .post(
            "/v1/arena",
            json!({"prompt": "hi", "models": ["mock/echo", "mock/mock-model"], "llmId": cfg}),
        )
        .await;
    assert_eq!(status, 200, "{standalone}");
    let detail = session(&server, standalone["id"].as_str().unwrap()).await;
    assert_eq!(detail["config"]["llmId"], cfg.as_str(), "{detail}");
    assert_eq!(detail["config"]["version"], 1);
    assert!(detail["config"]["resolvedFrom"].is_null(), "{detail}");
    let (status, plain) = server
        .post(
            "/v1/arena",
            json!({"prompt": "hi", "models": ["mock/echo", "mock/mock-model"]}),
        )
        .await;
    assert_eq!(status, 200, "{plain}");
    let detail = session(&server, plain["id"].as_str().unwrap()).await;
    assert!(detail["config"].is_null(), "{detail}");
}

#[tokio::test]
async fn a_model_whose_window_nothing_fits_fails_without_a_call_and_the_others_answer() {
    let server = small_windows("context_strategy = \"truncate\"").await;
    let conv = long_conversation(&server, 1).await;
    let before = streamed_to(&server, "small").len();
    // 500 words: more than `echo`'s budget on its own, within `wide`'s.
    let long: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
    let answer = arena(&server, &conv, &long.join(" "), &["small/echo", "big/wide"]).await;
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["status"], "failed", "{answer}");
    let error = results[0]["error"].as_str().unwrap();
    assert!(error.contains("context window of 400"), "{error}");
    assert_eq!(results[1]["status"], "completed", "{answer}");
    assert_eq!(
        streamed_to(&server, "small").len(),
        before,
        "no call to echo"
    );
    let waiting = server.get_ok(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(waiting["status"], "awaiting_pick", "{waiting}");
}
