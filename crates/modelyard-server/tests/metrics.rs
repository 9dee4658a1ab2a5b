//! Observability: `GET /metrics` after known traffic through the mock
//! (counts, token sums, a 5xx, a retry on a route), bounded cardinality,
//! access control and the separate listener; the access log line and
//! `x-request-id` (echoed, validated, on the call record).

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::TestServer;
use serde_json::{json, Value};

/// Series `name{labels}` → value, from a Prometheus text exposition.
fn series(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of the series of `name` that carry every label of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(text)
        .into_iter()
        .filter(|(key, _)| key == name || key.starts_with(&format!("{name}{{")))
        .filter(|(key, _)| {
            labels
                .iter()
                .all(|(k, v)| key.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

async fn scrape(server: &TestServer) -> String {
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    response.text().await.unwrap()
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream,
           "messages": [{"role": "user", "content": "hello there general kenobi"}]})
}

const ROUTE: &str = "[[routes]]\nname = \"pair\"\ntargets = [\"mock/status:503\", \"mock/echo\"]\n\
                     strategy = \"round-robin\"\n\n[routing]\nbackoff_ms = 1\ncooldown_failures = 100\n";

#[tokio::test]
async fn metrics_follow_known_traffic() {
    let server = TestServer::builder()
        .listed(&["echo", "status:503", "status:500"])
        .extra(ROUTE)
        .start()
        .await;
    for _ in 0..3 {
        let r = server.chat(&chat_body("mock/echo", false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = server.chat(&chat_body("mock/echo", true)).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // A deployment that always fails: 1 + 2 retries, then its 500.
    let r = server.chat(&chat_body("mock/status:500", false)).await;
    assert_eq!(r.status(), 500);
    r.bytes().await.unwrap();
    // Round-robin over a failing and a healthy target: one of two
    // requests meets the failing one first and is retried on the other.
    for _ in 0..2 {
        let r = server.chat(&chat_body("pair", false)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let calls = server.wait_calls(3 + 1 + 3 + 3).await;
    let text = scrape(&server).await;

    let chat_route = [("route", "/v1/chat/completions"), ("method", "POST")];
    let requests = |status| {
        value(
            &text,
            "modelyard_http_requests_total",
            &[chat_route[0], chat_route[1], ("status", status)],
        )
    };
    assert_eq!(requests("200"), 6.0, "{text}");
    assert_eq!(requests("500"), 1.0, "{text}");

    // Tokens: the sums equal what the call log recorded for the echo deployment.
    let echo: Vec<&Value> = calls
        .iter()
        .filter(|c| c["modelId"] == "mock/echo" && c["error"].is_null())
        .collect();
    // 3 + 1 streamed + 2 through the route.
    assert_eq!(echo.len(), 6);
    let sum = |field: &str| {
        echo.iter()
            .map(|c| c["usage"][field].as_f64().unwrap_or(0.0))
            .sum::<f64>()
    };
    let tokens = |kind| {
        value(
            &text,
            "gen_ai_client_token_usage_sum",
            &[
                ("gen_ai_request_model", "echo"),
                ("gen_ai_provider_name", "mock"),
                ("gen_ai_token_type", kind),
            ],
        )
    };
    assert!(sum("promptTokens") > 0.0);
    assert_eq!(tokens("input"), sum("promptTokens"), "{text}");
    assert_eq!(tokens("output"), sum("completionTokens"), "{text}");
    let echo_ok = [
        ("gen_ai_request_model", "echo"),
        ("modelyard_operation", "gateway"),
    ];
    assert_eq!(
        value(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &echo_ok
        ) - value(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[echo_ok[0], ("error_type", "")]
        ),
        6.0,
        "six echo calls answered: {text}"
    );
    // Streamed: a first token was seen.
    assert!(
        value(
            &text,
            "gen_ai_server_time_to_first_token_seconds_count",
            &echo_ok
        ) >= 1.0
    );

    // The 5xx: three attempts, each a failed operation with its status.
    let failing = [("deployment", "mock/status:500")];
    assert_eq!(
        value(
            &text,
            "modelyard_upstream_attempts_total",
            &[failing[0], ("status", "500")]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "modelyard_upstream_retries_total", &failing),
        2.0
    );
    assert_eq!(
        value(
            &text,
            "gen_ai_client_operation_duration_seconds_count",
            &[
                ("gen_ai_request_model", "status:500"),
                ("error_type", "500")
            ]
        ),
        3.0
    );
    // The route: exactly one retry away from the failing target.
    let route_fail = [("deployment", "mock/status:503")];
    assert_eq!(
        value(&text, "modelyard_upstream_retries_total", &route_fail),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "modelyard_upstream_attempts_total",
            &[route_fail[0], ("status", "503")]
        ),
        1.0
    );
    // Gateway overhead: one observation per answered chat request.
    assert_eq!(
        value(
            &text,
            "modelyard_gateway_overhead_seconds_count",
            &[("operation", "chat_completions")]
        ),
        6.0
    );
    // Scrape-time gauges.
    assert_eq!(
        value(&text, "modelyard_provider_up", &[("provider", "mock")]),
        1.0
    );
    assert_eq!(
        value(&text, "modelyard_provider_models", &[("provider", "mock")]),
        3.0
    );
    assert_eq!(
        value(&text, "modelyard_events_bus", &[("mode", "in-process")]),
        1.0
    );
    assert_eq!(value(&text, "modelyard_call_log_dropped_total", &[]), 0.0);
    assert!(text.contains("# TYPE modelyard_open_streams gauge"));
    assert!(text.contains("# TYPE modelyard_running_turns gauge"));
    assert!(text.contains("# TYPE modelyard_call_log_queued gauge"));
}

#[tokio::test]
async fn random_model_names_add_no_series() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let flood = |n: usize, seed: &'static str| {
        let server = &server;
        async move {
            for i in 0..n {
                let r = server
                    .chat(&chat_body(&format!("mock/{seed}-{i}-nope"), false))
                    .await;
                assert_eq!(r.status(), 404);
                r.bytes().await.unwrap();
                let r = server
                    .chat(&chat_body(&format!("made-up-{seed}-{i}"), false))
                    .await;
                r.bytes().await.unwrap();
            }
        }
    };
    flood(5, "a").await;
    // The first scrape adds its own route's series.
    scrape(&server).await;
    let keys = |text: &str| {
        let mut keys: Vec<String> = series(text).into_iter().map(|(k, _)| k).collect();
        keys.sort();
        keys
    };
    let before = keys(&scrape(&server).await);
    flood(40, "b").await;
    let after_text = scrape(&server).await;
    assert_eq!(
        before,
        keys(&after_text),
        "a flood of model names added series"
    );
    assert!(!after_text.contains("nope") && !after_text.contains("made-up"));
    assert_eq!(
        value(
            &after_text,
            "modelyard_http_requests_total",
            &[("route", "/v1/chat/completions"), ("status", "404")]
        ),
        90.0
    );
}

async fn get(server: &TestServer, path: &str, key: Option<&str>) -> u16 {
    let mut request = server.http.get(server.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

async fn create_key(server: &TestServer, admin: Option<&str>, role: &str) -> String {
    let mut request = server
        .http
        .post(server.url("/v1/keys"))
        .json(&json!({"role": role}));
    if let Some(key) = admin {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn metrics_are_admin_only_with_keys_and_open_on_their_own_listener() {
    let server = TestServer::builder()
        .extra("[telemetry]\nmetrics_listen = \"127.0.0.1:0\"\n")
        .start()
        .await;
    let admin = create_key(&server, None, "admin").await;
    let member = create_key(&server, Some(&admin), "member").await;
    let read = create_key(&server, Some(&admin), "read").await;
    assert_eq!(get(&server, "/metrics", None).await, 401);
    assert_eq!(get(&server, "/metrics", Some(&read)).await, 403);
    assert_eq!(get(&server, "/metrics", Some(&member)).await, 403);
    assert_eq!(get(&server, "/metrics", Some(&admin)).await, 200);
    // The separate listener: no auth, /metrics only.
    let addr = server.metrics_addr().expect("a metrics listener");
    assert!(addr.ip().is_loopback());
    let response = server
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.contains("modelyard_events_bus{mode=\"in-process\"} 1"),
        "{text}"
    );
    // The 401, 403s and 200 above were counted (by route pattern and status).
    assert_eq!(
        value(
            &text,
            "modelyard_http_requests_total",
            &[("route", "/metrics"), ("status", "403")]
        ),
        2.0
    );
    let other = server
        .http
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
}

#[tokio::test]
async fn metrics_off_records_nothing() {
    let server = TestServer::builder()
        .listed(&["echo"])
        .extra("[telemetry]\nmetrics = false\n")
        .start()
        .await;
    let r = server.chat(&chat_body("mock/echo", false)).await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    let text = scrape(&server).await;
    assert_eq!(value(&text, "modelyard_http_requests_total", &[]), 0.0);
    assert_eq!(value(&text, "gen_ai_client_token_usage_count", &[]), 0.0);
}

/// Everything logged, for the access-log test.
fn log_lines() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("modelyard::access=info")
            .with_ansi(false)
            .with_writer(move || Sink(Arc::clone(&writer)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buffer
    }))
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn request_ids_are_echoed_logged_and_recorded() {
    let log = log_lines();
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("x-request-id", "support-ticket-42")
        .json(&chat_body("mock/echo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "support-ticket-42");
    response.bytes().await.unwrap();

    // Invalid ids are replaced by a UUIDv7; errors carry one too.
    for bad in ["has space", &"x".repeat(129), ""] {
        let response = server
            .http
            .post(server.url("/v1/chat/completions"))
            .header("x-request-id", bad)
            .json(&chat_body("mock/nothing-here", false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(&id[14..15], "7", "a UUIDv7: {id}");
    }
    let response = server.http.get(server.url("/health")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));

    // On the call record, and a filter finds it.
    let calls = server.wait_calls(1).await;
    assert_eq!(calls[0]["requestId"], "support-ticket-42", "{calls:?}");
    let found = server
        .get_json("/v1/calls?requestId=support-ticket-42")
        .await;
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    let none = server.get_json("/v1/calls?requestId=other").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);
    let sessions = server.get_json("/v1/llm-sessions").await;
    assert_eq!(sessions["data"][0]["requestId"], "support-ticket-42");

    // The access line: method, route pattern, status, duration, model, id.
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.contains("request_id=\"support-ticket-42\"")
                || l.contains("request_id=support-ticket-42")
        })
        .unwrap_or_else(|| panic!("no access line: {text}"));
    assert!(line.contains("modelyard::access"), "{line}");
    for part in [
        "method=\"POST\"",
        "route=\"/v1/chat/completions\"",
        "status=200",
        "duration_ms=",
        "model=\"mock/echo\"",
        "project=\"default\"",
    ] {
        let bare = part.replace('"', "");
        assert!(
            line.contains(part) || line.contains(&bare),
            "{part} in {line}"
        );
    }
}

#[tokio::test]
async fn a_turns_llm_session_records_the_request_id_that_started_it() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let conv = common::conv::create(&server, json!({"model": "mock/echo"})).await;
    let response = server
        .http
        .post(server.url(&format!("/v1/conversations/{conv}/turns")))
        .header("x-request-id", "ticket-turn-7")
        .json(&json!({"content": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let turn: Value = response.json().await.unwrap();
    let turn_id = turn["turnId"].as_str().unwrap();
    common::conv::wait_turn(&server, &conv, turn_id).await;
    let calls = server.wait_calls(1).await;
    assert_eq!(calls[0]["requestId"], "ticket-turn-7", "{calls:?}");
    let sessions = server
        .get_json(&format!("/v1/llm-sessions?conversationId={conv}"))
        .await;
    let found = sessions["data"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{sessions}");
    assert_eq!(found[0]["turnId"], turn_id, "{sessions}");
    assert_eq!(found[0]["requestId"], "ticket-turn-7", "{sessions}");
}

/// The metric names a PromQL expression reads (`modelyard_*`, `gen_ai_*`,
/// as written: `…_bucket`, `…_total`).
fn metric_names(expr: &str) -> Vec<String> {
    // A metric is followed by a selector, a range or nothing; a label name
    // (`by (gen_ai_request_model)`, `gen_ai_provider_name=~…`) is not.
    let pattern = regex::Regex::new(r"\b((?:modelyard|gen_ai)_[a-z_]+)(?:\{|\[|$)").unwrap();
    pattern
        .captures_iter(expr)
        .map(|c| c.get(1).unwrap().as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn every_series_the_grafana_dashboard_reads_is_served() {
    let dashboard: Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json"))
            .expect("docs/grafana-dashboard.json is JSON");
    // Given traffic that makes every series: a stream (TTFT, tokens), and a
    // route whose only target fails (attempts, retries, a cooldown, errors)
    // and falls back.
    let server = TestServer::builder()
        .listed(&["echo", "status:503"])
        .extra(
            "[[routes]]\nname = \"flaky\"\ntargets = [\"mock/status:503\"]\n\
             fallbacks = [\"mock/echo\"]\n\n[routing]\nbackoff_ms = 1\ncooldown_failures = 1\n",
        )
        .start()
        .await;
    for body in [chat_body("mock/echo", true), chat_body("flaky", false)] {
        let r = server.chat(&body).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let exposition = scrape(&server).await;
    let served: std::collections::BTreeSet<String> = series(&exposition)
        .into_iter()
        .map(|(key, _)| key.split('{').next().unwrap().to_owned())
        .collect();
    // Then every series a panel reads is in the exposition.
    let mut read = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    served.contains(&name),
                    "panel {:?} reads {name}, which /metrics does not serve: {expr}\n{served:?}",
                    panel["title"]
                );
                read.push(name);
            }
        }
    }
    // And the panels the dashboard promises are there.
    for metric in [
        "modelyard_http_requests_total",
        "gen_ai_server_time_to_first_token_seconds_bucket",
        "gen_ai_client_token_usage_sum",
        "modelyard_gateway_overhead_seconds_bucket",
        "modelyard_provider_up",
    ] {
        assert!(read.iter().any(|n| n == metric), "no panel reads {metric}");
    }
}
