//! The events feed (`GET /v1/conversations/{id}/events`) under hostile or
//! careless clients: feeds that are opened and dropped on an idle
//! conversation end on the server, and `Last-Event-ID` positions that do not
//! fit are a 400, never a panic or a wrapped number.

mod common;

use std::time::Duration;

use common::conv::*;
use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

/// Bound of every poll in these tests.
const WAIT: Duration = Duration::from_secs(10);

async fn server(limits: &str) -> TestServer {
    TestServer::builder()
        .listed(&["mock-model", "echo", "slow:100"])
        .extra(&format!(
            "[defaults]\nmodel = \"mock/mock-model\"\n\n[limits]\n{limits}\n"
        ))
        .start()
        .await
}

/// `GET /events` with `Last-Event-ID: last_id`, as a raw response.
async fn open_raw(server: &TestServer, conv: &str, last_id: &str) -> reqwest::Response {
    server
        .http
        .get(server.url(&format!("/v1/conversations/{conv}/events")))
        .header("last-event-id", last_id)
        .send()
        .await
        .expect("open events")
}

/// Opens `n` feeds of `conv` and reads each up to its `caught-up` marker,
/// so each is live on the server.
async fn open_live(server: &TestServer, conv: &str, n: usize) -> Vec<Sse> {
    let mut feeds = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sse = Sse::open(server, conv, None).await;
        sse.replay().await;
        feeds.push(sse);
    }
    feeds
}

#[tokio::test]
async fn dropped_feeds_of_an_idle_conversation_end_on_the_server() {
    // Given a conversation with no turn running, and room for 50 feeds.
    let server = server("max_streams_per_key = 50\nmax_streams_per_project = 50").await;
    let conv = create(&server, json!({"title": "idle"})).await;
    let feeds = open_live(&server, &conv, 50).await;
    // The cap is reached: a 51st feed is refused.
    let refused = server
        .http
        .get(server.url(&format!("/v1/conversations/{conv}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);

    // When every client goes away while nothing is sent.
    drop(feeds);

    // Then every feed's slot comes back (they are held until the server's
    // feed task ends): 50 new feeds open.
    let (server, conv) = (&server, conv.as_str());
    eventually(
        WAIT,
        "the dropped feeds give their slots back",
        || async move {
            let status = server
                .http
                .get(server.url(&format!("/v1/conversations/{conv}/events")))
                .send()
                .await
                .unwrap()
                .status();
            if status != 200 {
                assert_eq!(status, 429);
            }
            status == 200
        },
    )
    .await;
    // (The probe above was dropped too; wait until all 50 can be held.)
    let again = eventually(WAIT, "all 50 slots came back", || async move {
        let mut opened = Vec::new();
        for _ in 0..50 {
            let response = server
                .http
                .get(server.url(&format!("/v1/conversations/{conv}/events")))
                .send()
                .await
                .unwrap();
            if response.status() != 200 {
                break;
            }
            opened.push(Sse::new(response));
        }
        if opened.len() == 50 {
            Ok(opened)
        } else {
            Err(format!("{} opened", opened.len()))
        }
    })
    .await;
    assert_eq!(again.len(), 50);
}

/// The last persisted seq of `conv`.
async fn last_seq(server: &TestServer, conv: &str) -> i64 {
    get(server, &format!("/v1/conversations/{conv}")).await["lastSeq"]
        .as_i64()
        .expect("lastSeq")
}

#[tokio::test]
async fn resume_positions_that_do_not_fit_are_a_400() {
    let server = server("").await;
    let conv = create(&server, json!({"title": "resume"})).await;
    run_turn(
        &server,
        &conv,
        json!({"content": "hello", "model": "mock/echo"}),
    )
    .await;
    let last = last_seq(&server, &conv).await;
    let past = (last + 1).to_string();
    for bad in [
        "-1",
        "+1",
        "1.-1.1",
        "99999999999999999999",
        "9223372036854775807",
        "9223372036854775808",
        past.as_str(),
        "3.4.18446744073709551616",
        "3.9223372036854775807.1",
        "x",
    ] {
        let response = open_raw(&server, &conv, bad).await;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // (A stream that opened would never end: check the status first.)
        assert_eq!(status, 400, "Last-Event-ID {bad:?}");
        let body: Value = tokio::time::timeout(WAIT, response.json())
            .await
            .expect("a problem body")
            .expect("JSON");
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
        assert!(
            body["detail"].as_str().unwrap().contains("cannot resume"),
            "{body}"
        );
    }
    // The last event itself is a fine place to resume from.
    let mut sse = Sse::open(&server, &conv, Some(&last.to_string())).await;
    assert!(sse.replay().await.is_empty());
}

#[tokio::test]
async fn a_resume_at_the_largest_index_of_a_running_turn_does_not_wrap() {
    // Given a turn that streams for a while.
    let server = server("").await;
    let conv = create(&server, json!({"title": "huge index"})).await;
    let words: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    let started = start_turn(
        &server,
        &conv,
        json!({"content": words.join(" "), "model": "mock/slow:100"}),
    )
    .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let mut watcher = Sse::open(&server, &conv, None).await;
    let before = watcher.until(|e| e.event == "text.delta").await;
    let turn_seq = before
        .iter()
        .find(|e| e.event == "turn.started")
        .expect("turn.started")
        .seq();
    let seq = before.iter().rev().find(|e| e.persisted()).unwrap().seq();

    // When a client claims to have seen index u64::MAX of that turn.
    let position = format!("{seq}.{turn_seq}.{}", u64::MAX);
    let mut sse = Sse::open(&server, &conv, Some(&position)).await;

    // Then it gets no delta again (nothing comes after that index) and the
    // turn's end, and the feed keeps working.
    let events = sse.until(|e| ends_turn(e, &turn_id)).await;
    assert!(events.iter().all(|e| e.event != "text.delta"), "{events:?}");
    assert!(events.iter().any(|e| e.event == "message.assistant"));
    wait_turn(&server, &conv, &turn_id).await;
}
