//! Budgets and rate limits of keys and projects (issue 21) end to end, in
//! front of the mock upstream: refusals (429, `Retry-After`, a message
//! naming the limit) in the OpenAI, Anthropic and problem shapes; the
//! rate-limit headers; 50 concurrent requests against a token budget and
//! a `maxConcurrent` cap, judged by what reached the mock; the limits API;
//! and two replicas on one PostgreSQL database sharing a 100 requests per
//! minute key (with `MODELYARD_TEST_POSTGRES_URL`).
//!
//! Rate limits count fixed UTC minutes: tests that must stay within one
//! first wait out a minute that is about to end ([`within_one_minute`]).

#![allow(clippy::unwrap_used)]

mod common;

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{error_envelope, TestServer};
use modelyard_testkit::{eventually, MockUpstream};
use serde_json::{json, Value};

/// The chat requests the mock received.
fn chats(mock: &MockUpstream) -> usize {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1/chat/completions")
        .count()
}

/// Waits, if need be, until at least `needed` is left of the current UTC
/// minute, so a test's requests all count in one rate-limit window.
async fn within_one_minute(needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_millis((now.as_millis() % 60_000) as u64);
    let left = Duration::from_secs(60) - into;
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(50)).await;
    }
}

/// A server whose mock lists `echo` and `slow:300`.
async fn server() -> TestServer {
    TestServer::builder()
        .listed(&["echo", "slow:300"])
        .start()
        .await
}

/// The first admin key (made over the API while the server is open).
async fn admin_key(server: &TestServer) -> String {
    let response = server
        .http
        .post(server.url("/v1/keys"))
        .json(&json!({"role": "admin", "name": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().unwrap().to_owned()
}

/// A member key with `limits`, made by `admin`; `(id, secret)`.
async fn limited_key(server: &TestServer, admin: &str, limits: Value) -> (String, String) {
    let response = server
        .http
        .post(server.url("/v1/keys"))
        .bearer_auth(admin)
        .json(&json!({"role": "member", "limits": limits}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

async fn post(server: &TestServer, key: &str, path: &str, body: &Value) -> reqwest::Response {
    server
        .http
        .post(server.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap()
}

fn chat(model: &str, max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": model,
        "messages": [{"role": "user", "content": "hello brave new world"}],
    });
    if let Some(max) = max_tokens {
        body["max_tokens"] = json!(max);
    }
    body
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn retry_after(response: &reqwest::Response) -> u64 {
    header(response, "retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", response.headers()))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn requests_per_minute_refuses_in_each_protocols_shape() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"requestsPerMinute": 3})).await;
    within_one_minute(Duration::from_secs(10)).await;
    // Three are admitted, each answer counting down.
    for left in [2, 1, 0] {
        let response = post(
            &server,
            &key,
            "/v1/chat/completions",
            &chat("mock/echo", None),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        assert_eq!(
            header(&response, "x-ratelimit-remaining-requests"),
            Some(left.to_string())
        );
    }
    // The fourth: OpenAI's envelope.
    let response = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", None),
    )
    .await;
    assert_eq!(response.status(), 429);
    let wait = retry_after(&response);
    assert!((1..=60).contains(&wait), "{wait}");
    let body: Value = response.json().await.unwrap();
    let error = error_envelope(&body);
    assert_eq!(error["type"], "rate_limit_exceeded", "{body}");
    assert_eq!(error["code"], "rate_limited", "{body}");
    assert_eq!(
        error["message"], "key limit requestsPerMinute=3 reached",
        "{body}"
    );
    // Anthropic's shape on /v1/messages.
    let messages = json!({
        "model": "mock/echo", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let response = post(&server, &key, "/v1/messages", &messages).await;
    assert_eq!(response.status(), 429);
    assert!(retry_after(&response) >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(
        body["error"]["message"],
        "key limit requestsPerMinute=3 reached"
    );
    // A problem document on the conversation API (creating one is not a
    // model call; its turn is).
    let created = post(&server, &key, "/v1/conversations", &json!({})).await;
    assert_eq!(created.status(), 201);
    let conv: Value = created.json().await.unwrap();
    let path = format!("/v1/conversations/{}/turns", conv["id"].as_str().unwrap());
    let response = post(
        &server,
        &key,
        &path,
        &json!({"content": "hi", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(retry_after(&response) >= 1);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/problem+json")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["limit"], "requestsPerMinute", "{body}");
    assert_eq!(body["scope"], "key", "{body}");
    assert_eq!(body["status"], 429);
    // Only the admitted three reached the upstream.
    assert_eq!(chats(&server.mock), 3);
}

#[tokio::test]
async fn tokens_per_minute_reserves_the_request_and_settles_to_its_usage() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"tokensPerMinute": 1000})).await;
    within_one_minute(Duration::from_secs(10)).await;
    // Each reserves 400 + its prompt estimate but spends ~9 (the mock's
    // usage): settled, ten fit in a minute that reserves would fill at two.
    for _ in 0..10 {
        let response = post(
            &server,
            &key,
            "/v1/chat/completions",
            &chat("mock/echo", Some(400)),
        )
        .await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "x-ratelimit-limit-tokens").as_deref(),
            Some("1000")
        );
        let left: i64 = header(&response, "x-ratelimit-remaining-tokens")
            .unwrap()
            .parse()
            .unwrap();
        assert!((0..=600).contains(&left), "{left}: the reserve is held");
    }
    // One that could never fit is refused, naming the limit.
    let response = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", Some(2000)),
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        error_envelope(&body)["message"],
        "key limit tokensPerMinute=1000 reached"
    );
    assert_eq!(chats(&server.mock), 10);
}

/// Sends `n` requests at once; the statuses.
async fn burst(server: &TestServer, key: &str, body: Value, n: usize) -> Vec<u16> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url, key, body) = (
            server.http.clone(),
            server.url("/v1/chat/completions"),
            key.to_owned(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            assert!(
                status == 200 || status == 429,
                "unexpected {status}: {text}"
            );
            status
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    statuses
}

#[tokio::test]
async fn fifty_concurrent_requests_stay_within_a_token_budget() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"maxTokens": 2000, "period": "day"})).await;
    // Slow answers: all 50 are in flight before any settles.
    let body = chat("mock/slow:300", Some(100));
    let reserve = 100 + serde_json::to_vec(&body).unwrap().len() / 4;
    let statuses = burst(&server, &key, body, 50).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    // What reached the mock is what was admitted, and its reserves fit the
    // budget: concurrency cannot overshoot it.
    assert_eq!(chats(&server.mock), admitted);
    assert!(admitted * reserve <= 2000, "{admitted} × {reserve}");
    assert_eq!(admitted, 2000 / reserve, "every reserve that fits is used");
    // The refusals name the budget; its day ends at midnight UTC.
    let response = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", Some(2000)),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert!(retry_after(&response) <= 86_400);
    let body: Value = response.json().await.unwrap();
    let error = error_envelope(&body);
    assert_eq!(error["type"], "insufficient_quota");
    assert_eq!(error["code"], "budget_exceeded");
    assert_eq!(error["message"], "key limit maxTokens=2000 per day reached");
}

#[tokio::test]
async fn max_concurrent_caps_what_is_in_flight_upstream() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"maxConcurrent": 5})).await;
    // Samples the mock's requests in flight while the burst runs.
    let peak = AtomicUsize::new(0);
    let sample = async {
        loop {
            peak.fetch_max(server.mock.in_flight(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let statuses = tokio::select! {
        statuses = burst(&server, &key, chat("mock/slow:300", None), 50) => statuses,
        () = sample => unreachable!("the sampler never ends"),
    };
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(admitted >= 5, "{statuses:?}");
    assert!(admitted < 50, "some were refused: {statuses:?}");
    assert!(peak.load(Ordering::Relaxed) <= 5, "peak {peak:?}");
    // Every slot came back: five at once are admitted again.
    let statuses = burst(&server, &key, chat("mock/echo", None), 5).await;
    assert_eq!(statuses, vec![200; 5]);
}

#[tokio::test]
async fn a_streams_slot_is_freed_when_the_client_leaves() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"maxConcurrent": 1})).await;
    // A long stream (one word per 300 ms).
    let words = vec!["word"; 40].join(" ");
    let body = json!({
        "model": "mock/slow:300", "stream": true,
        "messages": [{"role": "user", "content": words}],
    });
    let mut open = post(&server, &key, "/v1/chat/completions", &body).await;
    assert_eq!(open.status(), 200);
    let _first = open.chunk().await.unwrap();
    let refused = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", None),
    )
    .await;
    assert_eq!(refused.status(), 429);
    assert_eq!(retry_after(&refused), 1);
    drop(open);
    eventually(Duration::from_secs(5), "the slot is freed", || async {
        let response = post(
            &server,
            &key,
            "/v1/chat/completions",
            &chat("mock/echo", None),
        )
        .await;
        match response.status().as_u16() {
            200 => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn limits_are_managed_per_key_and_per_project() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (id, key) = limited_key(&server, &admin, json!({"requestsPerMinute": 50})).await;
    // An unlimited request has no rate-limit headers.
    let response = post(
        &server,
        &admin,
        "/v1/chat/completions",
        &chat("mock/echo", None),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "x-ratelimit-remaining-requests").is_none());
    // PATCH: absent fields stay, null removes, values set.
    let response = server
        .http
        .patch(server.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"limits": {"maxCostUsd": 5, "period": "day", "maxConcurrent": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["limits"],
        json!({"maxCostUsd": 5.0, "maxTokens": null, "period": "day",
               "requestsPerMinute": 50, "tokensPerMinute": null, "maxConcurrent": 3}),
        "{body}"
    );
    // A cost budget shows what is left, in USD.
    let response = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", None),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-modelyard-budget-remaining").as_deref(),
        Some("5.000000")
    );
    // Invalid limits name the field.
    let response = server
        .http
        .patch(server.url(&format!("/v1/keys/{id}")))
        .bearer_auth(&admin)
        .json(&json!({"limits": {"period": null}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422, "a budget without its period");
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["field"], "period", "{problem}");
    // A project's limits: replaced by PUT, read by GET, another id is 404.
    let response = server
        .http
        .put(server.url("/v1/projects/default/limits"))
        .bearer_auth(&admin)
        .json(&json!({"requestsPerMinute": 1000, "maxConcurrent": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let got: Value = server
        .http
        .get(server.url("/v1/projects/default/limits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["requestsPerMinute"], 1000, "{got}");
    assert_eq!(got["maxConcurrent"], 1, "{got}");
    let response = server
        .http
        .get(server.url("/v1/projects/other/limits"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // The project's cap applies to every key, the admin's too.
    let statuses = burst(&server, &admin, chat("mock/slow:300", None), 4).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    let response = post(
        &server,
        &admin,
        "/v1/chat/completions",
        &chat("mock/echo", None),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "x-ratelimit-limit-requests").as_deref(),
        Some("1000")
    );
}

/// A fresh database on the PostgreSQL test server, or `None` (skipped).
async fn fresh_postgres() -> Option<String> {
    use sqlx::postgres::PgConnectOptions;
    use sqlx::{ConnectOptions, Connection, Executor};
    let Ok(url) = std::env::var("MODELYARD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: MODELYARD_TEST_POSTGRES_URL is not set");
        return None;
    };
    let admin = PgConnectOptions::from_str(&url)
        .unwrap()
        .database("postgres");
    let name = format!("modelyard_budgets_{}", uuid::Uuid::now_v7().simple());
    let mut conn = admin.connect().await.unwrap();
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .unwrap();
    let _ = conn.close().await;
    Some(admin.database(&name).to_url_lossy().to_string())
}

async fn replica(db: &str, name: &str) -> TestServer {
    TestServer::builder()
        .listed(&["echo", "slow:1500"])
        .storage_url(db)
        .extra(&format!("[cluster]\nreplica_id = \"{name}\"\n"))
        .start()
        .await
}

/// A key with `limits` in the shared database `db`, made before any
/// replica starts (as `modelyard keys create` / `keys limits` would); its
/// secret.
async fn shared_key(db: &str, limits: Value) -> String {
    let store = modelyard_store::Store::connect(db).await.unwrap();
    let project = modelyard_store::ProjectId::default_project();
    let created = modelyard_server::service::keys::create(
        &store,
        &project,
        Some("shared".into()),
        modelyard_store::Role::Admin,
    )
    .await
    .unwrap();
    let patch: modelyard_server::service::usage_limits::LimitsPatch =
        serde_json::from_value(limits).unwrap();
    modelyard_server::service::usage_limits::change(
        &store,
        &project,
        &modelyard_store::LimitSubject::Key(created.row.id.clone()),
        &patch,
        true,
    )
    .await
    .unwrap();
    store.close().await;
    created.secret
}

#[tokio::test]
async fn two_replicas_share_a_keys_max_concurrent() {
    let Some(db) = fresh_postgres().await else {
        return;
    };
    let key = shared_key(&db, json!({"maxConcurrent": 3})).await;
    let a = replica(&db, "a").await;
    let b = replica(&db, "b").await;
    // Not across a minute's end, where leases move to the next window.
    within_one_minute(Duration::from_secs(15)).await;
    // Four slow requests on each replica at once: 1.5 s each, so all eight
    // are in flight together.
    let mut tasks = Vec::new();
    for server in [&a, &b] {
        for _ in 0..4 {
            let (http, url, key) = (
                server.http.clone(),
                server.url("/v1/chat/completions"),
                key.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let response = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&chat("mock/slow:1500", Some(8)))
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                let body = response.text().await.unwrap();
                assert!(status == 200 || status == 429, "{status}: {body}");
                if status == 429 {
                    assert!(body.contains("maxConcurrent"), "{body}");
                }
                status
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.unwrap() == 200);
    }
    eprintln!(
        "admitted {admitted} of 8 (replica a {}, b {})",
        chats(&a.mock),
        chats(&b.mock)
    );
    assert_eq!(admitted, chats(&a.mock) + chats(&b.mock));
    // Per replica, each would have let 3 through: 6 in all.
    assert_eq!(admitted, 3, "a key with maxConcurrent 3, two replicas");
}

#[tokio::test]
async fn two_replicas_share_a_keys_requests_per_minute() {
    let Some(db) = fresh_postgres().await else {
        return;
    };
    let secret = shared_key(&db, json!({"requestsPerMinute": 100})).await;
    let a = replica(&db, "a").await;
    let b = replica(&db, "b").await;
    within_one_minute(Duration::from_secs(20)).await;
    // 160 requests, 8 at a time on each replica.
    let mut tasks = Vec::new();
    for (i, server) in [&a, &b].into_iter().enumerate() {
        for j in 0..8 {
            let (http, url, key) = (
                server.http.clone(),
                server.url("/v1/chat/completions"),
                secret.clone(),
            );
            let body = chat("mock/echo", None);
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0;
                for _ in 0..10 {
                    let response = http
                        .post(&url)
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => admitted += 1,
                        429 => {}
                        other => panic!("replica {i} task {j}: {other}"),
                    }
                }
                admitted
            }));
        }
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += task.await.unwrap();
    }
    let reached = chats(&a.mock) + chats(&b.mock);
    eprintln!(
        "admitted {admitted} of 160 (replica a {}, b {})",
        chats(&a.mock),
        chats(&b.mock)
    );
    assert_eq!(admitted, reached, "every admitted request reached a mock");
    assert!(
        admitted <= 105,
        "admitted {admitted} of a 100 per minute key"
    );
    // Units parked unspent on a replica are at most a block each.
    assert!(admitted >= 90, "admitted only {admitted}");
    assert!(chats(&a.mock) > 0 && chats(&b.mock) > 0);
}

#[tokio::test]
async fn a_cost_budget_counts_each_calls_price_and_refuses_once_spent() {
    // 0.1 USD per token either way: a chat costs about a dollar.
    let server = TestServer::builder()
        .listed(&["echo"])
        .extra(
            "[[prices]]\nmodel = \"mock/*\"\ninput_per_mtok = 100000.0\n\
             output_per_mtok = 100000.0\n",
        )
        .start()
        .await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"maxCostUsd": 5.0, "period": "day"})).await;
    let mut admitted = 0;
    let mut remaining = Vec::new();
    let refused = loop {
        let response = post(
            &server,
            &key,
            "/v1/chat/completions",
            &chat("mock/echo", Some(8)),
        )
        .await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        remaining.push(
            header(&response, "x-modelyard-budget-remaining")
                .expect("a cost budget's remaining USD")
                .parse::<f64>()
                .unwrap(),
        );
        admitted += 1;
        assert!(
            admitted < 50,
            "never refused: the calls' cost is not counted"
        );
    };
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maxCostUsd"),
        "{body}"
    );
    // What the admitted calls cost, by the call log's prices.
    let spent: f64 = eventually(Duration::from_secs(5), "every call logged", || async {
        let calls: Value = server
            .http
            .get(server.url("/v1/calls"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let costs: Vec<f64> = calls["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["costUsd"].as_f64())
            .collect();
        if costs.len() == admitted {
            Ok(costs.iter().sum())
        } else {
            Err(format!("{} of {admitted} calls priced", costs.len()))
        }
    })
    .await;
    assert!(admitted >= 2, "a dollar a call under 5 USD: {admitted}");
    // Each request reserves its worst case (prompt estimate + max_tokens at
    // the price) and is refused once that no longer fits: the budget is
    // never passed, and what is left is less than one reserve.
    let reserve = cost_reserve_usd(&chat("mock/echo", Some(8)), 8);
    assert!(spent <= 5.0, "spent {spent} USD of 5");
    assert!(
        5.0 - spent < reserve,
        "spent {spent} USD; a reserve is {reserve}"
    );
    assert!(
        remaining.windows(2).all(|w| w[1] < w[0]),
        "the remaining budget goes down with each call: {remaining:?}"
    );
}

/// What a chat `body` with `max_tokens` reserves of a cost budget at the
/// tests' price (0.1 USD per token): a token per 4 body bytes plus its cap.
fn cost_reserve_usd(body: &Value, max_tokens: usize) -> f64 {
    (serde_json::to_vec(body).unwrap().len() / 4 + max_tokens) as f64 * 0.1
}

#[tokio::test]
async fn concurrent_requests_cannot_pass_a_cost_budget() {
    // 0.1 USD per token; slow answers, so all 30 are in flight at once.
    let server = TestServer::builder()
        .listed(&["slow:300"])
        .extra(
            "[[prices]]\nmodel = \"mock/*\"\ninput_per_mtok = 100000.0\n\
             output_per_mtok = 100000.0\n",
        )
        .start()
        .await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(
        &server,
        &admin,
        json!({"maxCostUsd": 20.0, "period": "day"}),
    )
    .await;
    let body = chat("mock/slow:300", Some(8));
    let reserve = cost_reserve_usd(&body, 8);
    let statuses = burst(&server, &key, body, 30).await;
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    // Only the reserves that fit were let through, whatever the calls cost.
    assert_eq!(chats(&server.mock), admitted);
    assert!(admitted >= 1, "{statuses:?}");
    assert!(
        admitted as f64 * reserve <= 20.0 + 1e-6,
        "{admitted} admitted × {reserve} USD reserved each"
    );
    assert!(
        admitted < 30,
        "every request admitted: the cost is not reserved"
    );
}

/// Waits until turn `turn` of `conv` has ended; its status.
async fn turn_ended(server: &TestServer, key: &str, conv: &str, turn: &str) -> String {
    eventually(Duration::from_secs(5), "the turn ended", || async {
        let turns: Value = server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/turns")))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let status = turns["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == turn)
            .map(|t| t["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        if matches!(status.as_str(), "running" | "") {
            Err(status)
        } else {
            Ok(status)
        }
    })
    .await
}

#[tokio::test]
async fn a_title_counts_against_the_keys_budget_and_is_refused_past_it() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(
        &server,
        &admin,
        json!({"maxTokens": 100000, "period": "day"}),
    )
    .await;
    let conv: Value = post(&server, &key, "/v1/conversations", &json!({}))
        .await
        .json()
        .await
        .unwrap();
    let conv = conv["id"].as_str().unwrap().to_owned();
    let turn = post(
        &server,
        &key,
        &format!("/v1/conversations/{conv}/turns"),
        &json!({"content": "Planning a trip to Lisbon", "model": "mock/echo"}),
    )
    .await;
    assert_eq!(turn.status(), 202);
    let turn: Value = turn.json().await.unwrap();
    let turn_id = turn["turnId"].as_str().unwrap();
    assert_eq!(turn_ended(&server, &key, &conv, turn_id).await, "completed");

    // Two identical chats around a title: the second finds the budget
    // lower by the first chat's tokens and the title's.
    let remaining = |response: &reqwest::Response| -> i64 {
        header(response, "x-ratelimit-remaining-tokens")
            .expect("a token budget's remaining tokens")
            .parse()
            .unwrap()
    };
    let first = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", Some(10)),
    )
    .await;
    assert_eq!(first.status(), 200);
    let before = remaining(&first);
    let first: Value = first.json().await.unwrap();
    let chat_tokens = first["usage"]["total_tokens"].as_i64().unwrap();

    let title = post(
        &server,
        &key,
        &format!("/v1/conversations/{conv}/title"),
        &json!({"model": "mock/echo"}),
    )
    .await;
    let status = title.status();
    let title: Value = title.json().await.unwrap();
    assert_eq!(status, 200, "{title}");
    let session = title["sessionId"].as_str().unwrap().to_owned();
    let title_tokens = eventually(Duration::from_secs(5), "the title logged", || async {
        let detail: Value = server
            .http
            .get(server.url(&format!("/v1/llm-sessions/{session}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        detail["usage"]["totalTokens"]
            .as_i64()
            .filter(|t| *t > 0)
            .ok_or(detail)
    })
    .await;

    let second = post(
        &server,
        &key,
        "/v1/chat/completions",
        &chat("mock/echo", Some(10)),
    )
    .await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        before - remaining(&second),
        chat_tokens + title_tokens,
        "the title's {title_tokens} tokens count against the key's budget"
    );

    // A key whose budget cannot hold a title's reserve is refused before
    // anything is sent.
    let (_, small) = limited_key(&server, &admin, json!({"maxTokens": 100, "period": "day"})).await;
    let sent = chats(&server.mock);
    let refused = post(
        &server,
        &small,
        &format!("/v1/conversations/{conv}/title"),
        &json!({"model": "mock/echo"}),
    )
    .await;
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "budget_exceeded", "{problem}");
    assert_eq!(chats(&server.mock), sent, "nothing sent upstream");
}

#[tokio::test]
async fn an_arena_reserves_one_chat_per_model() {
    let server = server().await;
    let admin = admin_key(&server).await;
    let (_, key) = limited_key(&server, &admin, json!({"tokensPerMinute": 1000})).await;
    within_one_minute(Duration::from_secs(10)).await;
    let arena = |models: &[&str]| json!({"models": models, "prompt": "hello", "options": {"max_tokens": 400}});
    // One chat of 400 fits, and so do two models of 400 each (~840 with
    // their prompt estimates): the reserve is held per model.
    let response = post(
        &server,
        &key,
        "/v1/arena",
        &arena(&["mock/echo", "mock/slow:300"]),
    )
    .await;
    assert_eq!(response.status(), 200);
    let left: i64 = header(&response, "x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        left <= 1000 - 2 * 400,
        "{left}: two models' reserve is held"
    );
    // Three models of 400 could never fit in 1000: refused before any call.
    let before = chats(&server.mock);
    let response = post(
        &server,
        &key,
        "/v1/arena",
        &arena(&["mock/echo", "mock/slow:300", "mock/mock-model"]),
    )
    .await;
    assert_eq!(response.status(), 429);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    // The conversation arena reserves the same way.
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .bearer_auth(&key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let conv: Value = response.json().await.unwrap();
    let path = format!("/v1/conversations/{}/arena", conv["id"].as_str().unwrap());
    let response = post(
        &server,
        &key,
        &path,
        &json!({"content": "hello", "models": ["mock/echo", "mock/slow:300", "mock/mock-model"],
                "options": {"max_tokens": 400}}),
    )
    .await;
    assert_eq!(response.status(), 429);
    assert_eq!(chats(&server.mock), before, "nothing reached the upstream");
}

#[tokio::test]
async fn a_turn_and_an_arena_reserve_their_models_price() {
    // 0.1 USD per token: a turn's default reserve (4,096 output tokens)
    // is worth about 410 USD; an arena model's with max_tokens 600, ~62.
    let server = TestServer::builder()
        .listed(&["echo", "slow:300"])
        .extra(
            "[[prices]]\nmodel = \"mock/*\"\ninput_per_mtok = 100000.0\n\
             output_per_mtok = 100000.0\n",
        )
        .start()
        .await;
    let admin = admin_key(&server).await;
    let budget = |usd: f64| json!({"maxCostUsd": usd, "period": "day"});
    let (_, small) = limited_key(&server, &admin, budget(200.0)).await;
    let (_, large) = limited_key(&server, &admin, budget(1000.0)).await;
    let conversation = |key: String| {
        let server = &server;
        async move {
            let conv: Value = post(
                server,
                &key,
                "/v1/conversations",
                &json!({"model": "mock/echo"}),
            )
            .await
            .json()
            .await
            .unwrap();
            conv["id"].as_str().unwrap().to_owned()
        }
    };

    // The conversation's model is priced: a turn that names no model
    // reserves its worth and is refused before anything is sent.
    let conv = conversation(small.clone()).await;
    let sent = chats(&server.mock);
    let turns = format!("/v1/conversations/{conv}/turns");
    let refused = post(&server, &small, &turns, &json!({"content": "hello"})).await;
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "budget_exceeded", "{problem}");
    // So is one that overrides the model.
    let refused = post(
        &server,
        &small,
        &turns,
        &json!({"content": "hello", "model": "mock/slow:300"}),
    )
    .await;
    assert_eq!(refused.status(), 429);
    assert_eq!(chats(&server.mock), sent, "nothing sent upstream");

    // A budget that holds the reserve admits the turn, and shows the
    // reserve held.
    let conv = conversation(large.clone()).await;
    let turns = format!("/v1/conversations/{conv}/turns");
    let admitted = post(&server, &large, &turns, &json!({"content": "hello"})).await;
    assert_eq!(admitted.status(), 202);
    let left: f64 = header(&admitted, "x-modelyard-budget-remaining")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        left <= 1000.0 - 409.6,
        "{left} USD left: the reserve is not held"
    );
    let turn: Value = admitted.json().await.unwrap();
    let turn_id = turn["turnId"].as_str().unwrap();
    assert_eq!(
        turn_ended(&server, &large, &conv, turn_id).await,
        "completed"
    );

    // An arena prices each model's share: two of ~62 USD pass 100.
    let (_, hundred) = limited_key(&server, &admin, budget(100.0)).await;
    let arena = json!({"models": ["mock/echo", "mock/slow:300"], "prompt": "hello",
                       "options": {"max_tokens": 600}});
    let sent = chats(&server.mock);
    let refused = post(&server, &hundred, "/v1/arena", &arena).await;
    assert_eq!(refused.status(), 429);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "budget_exceeded", "{problem}");
    assert_eq!(chats(&server.mock), sent, "nothing sent upstream");
    let (_, two_hundred) = limited_key(&server, &admin, budget(200.0)).await;
    let admitted = post(&server, &two_hundred, "/v1/arena", &arena).await;
    assert_eq!(admitted.status(), 200);
    let left: f64 = header(&admitted, "x-modelyard-budget-remaining")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left <= 200.0 - 120.0, "{left} USD left of 200");
}
