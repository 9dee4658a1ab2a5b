//! Call-log content policy and retention: `storage.content = "metadata"`
//! keeps no message text on disk; `[storage.retention]` prunes at start-up.

mod common;

use std::time::Duration;

use common::{chat_body, TestServer};
use modelyard_testkit::eventually;
use serde_json::json;

/// Occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test]
async fn metadata_content_keeps_no_message_text_on_disk() {
    let server = TestServer::builder()
        .storage("content = \"metadata\"")
        .start()
        .await;
    let marker = format!("marker{}", uuid::Uuid::now_v7().simple());
    let body = json!({
        "model": "mock/echo",
        "temperature": 0.25,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": format!("please repeat {marker}")},
        ],
    });
    let response = server.chat(&body).await;
    assert_eq!(response.status(), 200);
    let answer = response.text().await.unwrap();
    assert!(answer.contains(&marker), "the client still gets the answer");

    let call = server.only_call().await;
    assert_eq!(call["status"], "ok");
    assert!(
        call["usage"]["promptTokens"].as_i64().unwrap() > 0,
        "{call}"
    );
    assert!(call["usage"]["totalTokens"].as_i64().unwrap() > 0, "{call}");
    assert_eq!(call["request"]["messagesOmitted"], 2, "{call}");
    assert_eq!(call["request"]["temperature"], 0.25, "{call}");
    assert!(call["request"].get("messages").is_none(), "{call}");
    assert!(call["responseText"].is_null(), "{call}");

    let dir = server.shutdown().await;
    let mut files = 0;
    for suffix in ["", "-wal"] {
        let path = dir.path().join(format!("modelyard.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&path) {
            files += 1;
            assert_eq!(
                count(&bytes, marker.as_bytes()),
                0,
                "{} holds message text",
                path.display()
            );
        }
    }
    assert!(files >= 1, "the database file exists");
}

#[tokio::test]
async fn full_content_is_the_default() {
    let server = TestServer::start().await;
    let response = server.chat(&chat_body("mock/echo", false)).await;
    assert_eq!(response.status(), 200);
    let call = server.only_call().await;
    assert!(call["request"]["messages"].is_array(), "{call}");
    assert!(call["responseText"].is_string(), "{call}");
    server.shutdown().await;
}

#[tokio::test]
async fn start_up_prune_keeps_the_newest_calls() {
    let server = TestServer::start().await;
    for _ in 0..5 {
        let response = server.chat(&chat_body("mock/echo", false)).await;
        assert_eq!(response.status(), 200);
    }
    let all = server.wait_calls(5).await;
    let newest: Vec<String> = all[..2]
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let dir = server.shutdown().await;

    let server = TestServer::builder()
        .dir(dir)
        .extra("[storage.retention]\nmax_calls = 2\n")
        .start()
        .await;
    let remaining = eventually(Duration::from_secs(5), "at most 2 calls remain", || async {
        let calls = server.calls().await;
        if calls.len() <= 2 {
            Ok(calls)
        } else {
            Err(calls)
        }
    })
    .await;
    let ids: Vec<String> = remaining
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, newest, "exactly the two newest calls remain");
    // The prune deletes the calls first, then (in its own statement) the
    // sessions they leave empty.
    eventually(
        Duration::from_secs(5),
        "the sessions of pruned calls are gone",
        || async {
            let sessions = server.get_json("/v1/llm-sessions?limit=500").await;
            if sessions["data"].as_array().unwrap().len() == 2 {
                Ok(())
            } else {
                Err(sessions)
            }
        },
    )
    .await;
    server.shutdown().await;
}
