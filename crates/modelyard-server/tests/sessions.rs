//! End-to-end tests of the LLM-call audit: `/v1/llm-sessions`,
//! `/v1/llm-calls/{id}` and `/v1/usage`, over sessions produced by gateway
//! calls and a conversation turn against the mock upstream.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{chat_body, Builder, TestServer};
use modelyard_store::{NewLlmCall, NewLlmSession, ProjectId, RecordedSession, Store, UsageRow};
use modelyard_testkit::eventually;
use serde_json::{json, Value};

/// Bound of every wait in this file.
const LIMIT: Duration = Duration::from_secs(15);

const LISTED: &[&str] = &["mock-model", "reasoning", "status:500"];

/// One attempt per request, so each session here has one call (sessions
/// with retried attempts: tests/routing.rs).
fn builder() -> Builder {
    TestServer::builder()
        .listed(LISTED)
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n[routing]\nretries = 0\n")
}

/// Token fields of a call's `usage` and the matching session / usage fields.
const TOKEN_FIELDS: [(&str, &str); 5] = [
    ("promptTokens", "promptTokens"),
    ("completionTokens", "completionTokens"),
    ("reasoningTokens", "reasoningTokens"),
    ("cachedPromptTokens", "cachedPromptTokens"),
    ("totalTokens", "totalTokens"),
];

/// `GET path`, asserting a 400 whose detail contains every one of `needles`.
async fn bad_request(server: &TestServer, path: &str, needles: &[&str]) -> Value {
    let (status, body) = server.send("GET", path, None).await;
    assert_eq!(status, 400, "GET {path}: {body}");
    let detail = body["detail"].as_str().unwrap();
    for needle in needles {
        assert!(
            detail.contains(needle),
            "GET {path}: {detail:?} names {needle:?}"
        );
    }
    body
}

fn data(page: &Value) -> Vec<Value> {
    page["data"].as_array().expect("data array").clone()
}

fn ids(sessions: &[Value]) -> Vec<String> {
    sessions
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Polls `/v1/llm-sessions` until at least `n` sessions exist.
async fn wait_sessions(server: &TestServer, n: usize) -> Vec<Value> {
    eventually(LIMIT, &format!("at least {n} sessions"), || async move {
        let sessions = data(&server.get_ok("/v1/llm-sessions?limit=500").await);
        if sessions.len() >= n {
            Ok(sessions)
        } else {
            Err(sessions)
        }
    })
    .await
}

/// Runs one turn of a new conversation to its end; returns (conversation
/// id, turn id).
async fn conversation_turn(server: &TestServer) -> (String, String) {
    let (status, c) = server
        .send("POST", "/v1/conversations", Some(json!({"title": "audit"})))
        .await;
    assert_eq!(status, 201, "create: {c}");
    let conv = c["id"].as_str().unwrap().to_owned();
    let (status, started) = server
        .send(
            "POST",
            &format!("/v1/conversations/{conv}/turns"),
            Some(json!({"content": "tell me about audits"})),
        )
        .await;
    assert_eq!(status, 202, "start turn: {started}");
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let (c, t) = (conv.as_str(), turn_id.as_str());
    let turn = eventually(LIMIT, "turn not running", || async move {
        let turns = server.get_ok(&format!("/v1/conversations/{c}/turns")).await;
        let turn = data(&turns)
            .into_iter()
            .find(|turn| turn["id"] == t)
            .unwrap_or_else(|| panic!("turn listed: {turns}"));
        if turn["status"] != "running" {
            Ok(turn)
        } else {
            Err(turn)
        }
    })
    .await;
    assert_eq!(turn["status"], "completed", "{turn}");
    (conv, turn_id)
}

/// Three gateway sessions (one failing) and one `chat` turn session.
struct Fixture {
    server: TestServer,
    conversation: String,
    turn: String,
}

async fn fixture() -> Fixture {
    let server = builder().start().await;
    for (model, stream) in [
        ("mock/mock-model", false),
        ("mock/reasoning", true),
        ("mock/status:500", false),
    ] {
        let response = server.chat(&chat_body(model, stream)).await;
        let status = response.status().as_u16();
        let _ = response.bytes().await;
        assert_eq!(
            status == 200,
            model != "mock/status:500",
            "{model}: {status}"
        );
    }
    let (conversation, turn) = conversation_turn(&server).await;
    wait_sessions(&server, 4).await;
    Fixture {
        server,
        conversation,
        turn,
    }
}

fn tokens(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

#[tokio::test]
async fn sessions_calls_and_usage_agree() {
    let Fixture {
        server,
        conversation,
        turn,
    } = fixture().await;

    let sessions = wait_sessions(&server, 4).await;
    assert_eq!(sessions.len(), 4, "{sessions:#?}");
    let listed_ids = ids(&sessions);
    let mut sorted = listed_ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(listed_ids, sorted, "newest first");

    // Shape of a listed session.
    for s in &sessions {
        let keys: BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
        let expected: BTreeSet<&str> = [
            "id",
            "operation",
            "parentSessionId",
            "conversationId",
            "turnId",
            "requestId",
            "createdAt",
            "callCount",
            "modelId",
            "provider",
            "status",
            "lastError",
            "startedAt",
            "finishedAt",
            "durationMs",
            "usage",
            "costUsd",
            "config",
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, expected, "{s}");
        assert_eq!(s["callCount"], 1, "{s}");
        assert_eq!(s["provider"], "mock", "{s}");
        assert!(s["parentSessionId"].is_null());
        for (_, field) in TOKEN_FIELDS {
            assert!(s["usage"][field].is_i64(), "usage.{field} is a number: {s}");
        }
        // The session's sums carry exactly the names of a call's usage.
        let mut usage_keys: Vec<&str> = s["usage"]
            .as_object()
            .expect("usage object")
            .keys()
            .map(String::as_str)
            .collect();
        usage_keys.sort_unstable();
        let mut call_names = TOKEN_FIELDS.map(|(call_field, _)| call_field);
        call_names.sort_unstable();
        assert_eq!(usage_keys, call_names, "{s}");
        assert!(s["createdAt"].as_str().unwrap().ends_with('Z'));
    }
    let by_op =
        |op: &str| -> Vec<&Value> { sessions.iter().filter(|s| s["operation"] == op).collect() };
    assert_eq!(by_op("gateway").len(), 3);
    let chat = by_op("chat");
    assert_eq!(chat.len(), 1);
    let chat = chat[0];
    assert_eq!(chat["conversationId"], conversation.as_str());
    assert_eq!(chat["turnId"], turn.as_str());
    assert_eq!(chat["modelId"], "mock/mock-model");
    assert_eq!(chat["status"], "ok");
    assert!(chat["usage"]["totalTokens"].as_i64().unwrap() > 0, "{chat}");
    // The turn ran with the server default (`defaults.model`, a
    // system-default config); a gateway request naming no config with none.
    assert_eq!(chat["config"]["source"], "system-default", "{chat}");
    assert_eq!(chat["config"]["resolvedFrom"], "serverDefault", "{chat}");
    assert_eq!(chat["config"]["model"], "mock/mock-model", "{chat}");
    for g in by_op("gateway") {
        assert!(
            g["conversationId"].is_null() && g["turnId"].is_null(),
            "{g}"
        );
        assert!(g["config"].is_null(), "{g}");
    }
    let failed: Vec<&Value> = sessions.iter().filter(|s| s["status"] == "error").collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["modelId"], "mock/status:500");
    assert!(failed[0]["lastError"].is_string(), "{}", failed[0]);

    // Detail of every session: its calls are exactly what /v1/calls/{id}
    // and /v1/llm-calls/{id} show, and their sums are the session's totals.
    let mut all_calls = Vec::new();
    for s in &sessions {
        let id = s["id"].as_str().unwrap();
        let detail = server.get_ok(&format!("/v1/llm-sessions/{id}")).await;
        let calls = detail["calls"].as_array().expect("calls").clone();
        assert_eq!(detail["children"], json!([]));
        let mut summary = detail.clone();
        summary.as_object_mut().unwrap().remove("calls");
        summary.as_object_mut().unwrap().remove("children");
        assert_eq!(&summary, s, "the detail is the listed session plus calls");
        assert_eq!(calls.len() as i64, s["callCount"].as_i64().unwrap());
        for call in &calls {
            let call_id = call["id"].as_str().unwrap();
            assert_eq!(call["sessionId"], id);
            assert!(call.get("request").is_some(), "full call view: {call}");
            assert_eq!(&server.get_ok(&format!("/v1/calls/{call_id}")).await, call);
            assert_eq!(
                &server.get_ok(&format!("/v1/llm-calls/{call_id}")).await,
                call
            );
        }
        for (call_field, session_field) in TOKEN_FIELDS {
            let sum: i64 = calls.iter().map(|c| tokens(&c["usage"], call_field)).sum();
            assert_eq!(
                sum,
                tokens(&s["usage"], session_field),
                "{session_field} of {s}"
            );
        }
        assert_eq!(s["startedAt"], calls[0]["sentAt"]);
        all_calls.extend(calls);
    }

    // /v1/usage: every grouping totals the same as the sessions and calls.
    let day = all_calls[0]["sentAt"].as_str().unwrap()[..10].to_owned();
    for group in ["model", "provider", "operation", "day"] {
        let usage = server.get_ok(&format!("/v1/usage?groupBy={group}")).await;
        assert_eq!(usage["groupBy"], group);
        assert!(usage["from"].is_null() && usage["to"].is_null());
        let rows = data(&usage);
        let keys: Vec<&str> = rows.iter().map(|r| r["key"].as_str().unwrap()).collect();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        assert_eq!(keys, sorted_keys, "ordered by key");
        match group {
            "model" => assert_eq!(
                keys,
                ["mock/mock-model", "mock/reasoning", "mock/status:500"]
            ),
            "provider" => assert_eq!(keys, ["mock"]),
            "operation" => assert_eq!(keys, ["chat", "gateway"]),
            _ => assert!(keys.contains(&day.as_str()), "{keys:?} has {day}"),
        }
        let total = &usage["total"];
        assert_eq!(total["calls"], all_calls.len() as i64, "{usage}");
        assert_eq!(
            rows.iter().map(|r| tokens(r, "calls")).sum::<i64>(),
            all_calls.len() as i64
        );
        for (call_field, field) in TOKEN_FIELDS {
            let from_calls: i64 = all_calls
                .iter()
                .map(|c| tokens(&c["usage"], call_field))
                .sum();
            let from_sessions: i64 = sessions.iter().map(|s| tokens(&s["usage"], field)).sum();
            let from_rows: i64 = rows.iter().map(|r| tokens(r, field)).sum();
            assert_eq!(from_calls, from_sessions, "{field}");
            assert_eq!(tokens(total, field), from_calls, "{group} total {field}");
            assert_eq!(from_rows, from_calls, "{group} rows {field}");
        }
    }
    // Default grouping is by model; a range echoes normalized bounds.
    let default = server.get_ok("/v1/usage").await;
    assert_eq!(default["groupBy"], "model");
    let ranged = server
        .get_ok("/v1/usage?groupBy=day&from=2000-01-01&to=2000-01-02T00:00:00%2B01:00")
        .await;
    assert_eq!(ranged["from"], "2000-01-01T00:00:00.000Z");
    assert_eq!(ranged["to"], "2000-01-01T23:00:00.000Z");
    assert_eq!(ranged["data"], json!([]));
    assert_eq!(ranged["total"]["calls"], 0);
    assert_eq!(ranged["total"]["totalTokens"], 0);
    server.shutdown().await;
}

#[tokio::test]
async fn filters_and_pages() {
    let Fixture {
        server,
        conversation,
        turn: _,
    } = fixture().await;
    let all = ids(&wait_sessions(&server, 4).await);
    let find = |query: String| {
        let server = &server;
        async move {
            ids(&data(
                &server.get_ok(&format!("/v1/llm-sessions?{query}")).await,
            ))
        }
    };
    let count = |query: &str| {
        let query = query.to_owned();
        let find = &find;
        async move { find(query).await.len() }
    };
    assert_eq!(count("operation=gateway").await, 3);
    assert_eq!(count("operation=chat").await, 1);
    assert_eq!(count("operation=nope").await, 0);
    assert_eq!(count(&format!("conversationId={conversation}")).await, 1);
    assert_eq!(count("conversationId=nope").await, 0);
    assert_eq!(count("model=mock/reasoning").await, 1);
    assert_eq!(count("model=mock/mock-model").await, 2);
    assert_eq!(count("provider=mock").await, 4);
    assert_eq!(count("provider=other").await, 0);
    assert_eq!(count("status=error").await, 1);
    assert_eq!(count("status=ok").await, 3);
    assert_eq!(count("status=ok&operation=gateway").await, 2);
    assert_eq!(count("from=2000-01-01T00:00:00Z").await, 4);
    assert_eq!(count("to=2000-01-01T00:00:00Z").await, 0);
    assert_eq!(count("from=2999-01-01").await, 0);

    // Paging: limit 3 → 3 + 1, nextBefore null on the short page.
    let page1 = server.get_ok("/v1/llm-sessions?limit=3").await;
    assert_eq!(ids(&data(&page1)), all[..3]);
    let next = page1["nextBefore"].as_str().expect("nextBefore").to_owned();
    assert_eq!(next, all[2]);
    let page2 = server
        .get_ok(&format!("/v1/llm-sessions?limit=3&before={next}"))
        .await;
    assert_eq!(ids(&data(&page2)), all[3..]);
    assert!(page2["nextBefore"].is_null());
    // A full last page still has a cursor; the page after it is empty.
    let page = server.get_ok("/v1/llm-sessions?limit=4").await;
    let before = page["nextBefore"].as_str().expect("cursor");
    let empty = server
        .get_ok(&format!("/v1/llm-sessions?limit=4&before={before}"))
        .await;
    assert_eq!(empty, json!({"data": [], "nextBefore": null}));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_session_list_parameters_are_400_naming_them() {
    let server = builder().start().await;
    let body = bad_request(&server, "/v1/llm-sessions?foo=1", &["unknown field", "foo"]).await;
    assert_eq!(body["title"], "Bad Request");
    bad_request(&server, "/v1/llm-sessions?modelId=x", &["modelId"]).await;
    bad_request(
        &server,
        "/v1/llm-sessions?status=failed",
        &["status", "\"ok\"", "\"error\"", "failed"],
    )
    .await;
    bad_request(
        &server,
        "/v1/llm-sessions?limit=0",
        &["limit", "1 and 500", "0"],
    )
    .await;
    bad_request(&server, "/v1/llm-sessions?limit=501", &["limit", "501"]).await;
    bad_request(&server, "/v1/llm-sessions?limit=many", &["limit"]).await;
    bad_request(
        &server,
        "/v1/llm-sessions?from=yesterday",
        &["from", "yesterday", "RFC 3339"],
    )
    .await;
    bad_request(
        &server,
        "/v1/llm-sessions?to=2026-02-30T00:00:00Z",
        &["to:", "RFC 3339"],
    )
    .await;
    bad_request(
        &server,
        "/v1/llm-sessions?from=2026-01-02&to=2026-01-01",
        &["from", "must be before", "to"],
    )
    .await;
    bad_request(&server, "/v1/llm-sessions?model=", &["model", "empty"]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_usage_parameters_are_400_naming_them() {
    let server = builder().start().await;
    let body = bad_request(
        &server,
        "/v1/usage?groupBy=week",
        &[
            "groupBy",
            "project, key, model, provider, operation, day",
            "week",
        ],
    )
    .await;
    assert_eq!(
        body["allowed"],
        json!(["project", "key", "model", "provider", "operation", "day"])
    );
    bad_request(&server, "/v1/usage?groupBy=Model", &["groupBy"]).await;
    bad_request(
        &server,
        "/v1/usage?group_by=model",
        &["unknown field", "group_by"],
    )
    .await;
    bad_request(
        &server,
        "/v1/usage?from=2026-01-01T00:00",
        &["from", "RFC 3339"],
    )
    .await;
    bad_request(
        &server,
        "/v1/usage?from=2026-01-01&to=2026-01-01",
        &["must be before"],
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_session_and_call_ids_are_404() {
    let server = builder().start().await;
    for path in [
        "/v1/llm-sessions/nope",
        "/v1/llm-calls/nope",
        "/v1/calls/nope",
    ] {
        let (status, body) = server.send("GET", path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("nope"), "{body}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn with_nothing_recorded_lists_are_empty_and_totals_zero() {
    let server = builder().start().await;
    // Nothing recorded yet: empty lists and zero totals.
    assert_eq!(
        server.get_ok("/v1/llm-sessions").await,
        json!({"data": [], "nextBefore": null})
    );
    let usage = server.get_ok("/v1/usage?groupBy=day").await;
    assert_eq!(usage["data"], json!([]));
    assert_eq!(
        usage["total"],
        json!({"calls": 0, "unpricedCalls": 0, "promptTokens": 0, "completionTokens": 0,
               "reasoningTokens": 0, "cachedPromptTokens": 0, "totalTokens": 0,
               "costUsd": null})
    );
    server.shutdown().await;
}

/// Child sessions are not produced by the server yet: record a parent and
/// two children straight into the server's database, then read them back.
#[tokio::test]
async fn session_detail_lists_children() {
    let dir = builder().start().await.shutdown().await;
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("modelyard.db").display()
    ))
    .await
    .expect("open the server's store");
    let ids: Vec<String> = {
        let mut ids: Vec<String> = (0..6).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        ids.sort();
        ids
    };
    let session = |id: &str, parent: Option<&str>| NewLlmSession {
        id: id.to_owned(),
        operation: if parent.is_some() {
            "summarize"
        } else {
            "agent"
        }
        .to_owned(),
        parent_session_id: parent.map(str::to_owned),
        conversation_id: None,
        turn_id: None,
        created_at_ms: 1_704_067_200_000,
        request_id: None,
        key_id: None,
        config: None,
    };
    let call = |id: &str, session: &str, total: Option<i64>| NewLlmCall {
        id: id.to_owned(),
        session_id: session.to_owned(),
        model_id: "mock/mock-model".to_owned(),
        provider: "mock".to_owned(),
        upstream_model: "mock-model".to_owned(),
        stream: false,
        request_json: "{\"messages\":[]}".to_owned(),
        response_text: Some("ok".to_owned()),
        reasoning_text: None,
        tool_calls_json: None,
        finish_reason: Some("stop".to_owned()),
        usage: UsageRow {
            total_tokens: total,
            ..UsageRow::default()
        },
        sent_at_ms: 1_704_067_200_000,
        first_token_at_ms: None,
        completed_at_ms: Some(1_704_067_201_000),
        http_status: Some(200),
        error: None,
        attempt: 1,
        route: None,
        cost: Default::default(),
    };
    let (parent, child_a, child_b) = (&ids[0], &ids[1], &ids[2]);
    store
        .record_sessions(
            &ProjectId::default_project(),
            &[
                RecordedSession {
                    session: session(parent, None),
                    calls: vec![call(&ids[3], parent, Some(5))],
                },
                RecordedSession {
                    session: session(child_b, Some(parent)),
                    calls: vec![call(&ids[5], child_b, None)],
                },
                RecordedSession {
                    session: session(child_a, Some(parent)),
                    calls: vec![call(&ids[4], child_a, Some(7))],
                },
            ],
        )
        .await
        .expect("record");
    store.close().await;

    let server = builder().dir(dir).start().await;
    let detail = server.get_ok(&format!("/v1/llm-sessions/{parent}")).await;
    assert_eq!(detail["usage"]["totalTokens"], 5);
    assert_eq!(detail["durationMs"], 1000);
    assert_eq!(detail["startedAt"], "2024-01-01T00:00:00.000Z");
    let children = detail["children"].as_array().unwrap();
    assert_eq!(ids_of(children), [child_a.as_str(), child_b.as_str()]);
    assert!(children
        .iter()
        .all(|c| c["parentSessionId"] == parent.as_str()));
    assert_eq!(children[0]["usage"]["totalTokens"], 7);
    assert_eq!(
        children[1]["usage"]["totalTokens"], 0,
        "unreported usage is 0"
    );
    let child = server.get_ok(&format!("/v1/llm-sessions/{child_a}")).await;
    assert_eq!(child["children"], json!([]));
    assert_eq!(child["calls"][0]["id"], ids[4].as_str());
    let usage = server
        .get_ok("/v1/usage?groupBy=operation&from=2024-01-01&to=2024-01-02")
        .await;
    assert_eq!(
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (
                r["key"].as_str().unwrap(),
                r["totalTokens"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("agent", 5), ("summarize", 7)]
    );
    server.shutdown().await;
}

fn ids_of(values: &[Value]) -> Vec<&str> {
    values.iter().map(|v| v["id"].as_str().unwrap()).collect()
}
