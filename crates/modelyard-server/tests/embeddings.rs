//! The pass-throughs besides chat — `POST /v1/embeddings`, `POST /v1/rerank`
//! (and `/v1/reranking`), the legacy `POST /v1/completions` — against mock
//! upstreams: the body reaches the upstream byte for byte but `model`, the
//! answer comes back with the client's id, usage lands in the call log under
//! the endpoint's operation, routes retry and balance, errors are OpenAI
//! envelopes, and the `metadata` content policy stores no input text.

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use modelyard_testkit::{Flavour, MockModel, MockOptions, MockUpstream};
use serde_json::{json, Value};

/// `POST path` with `body` as is: status, `x-modelyard-model`,
/// `x-modelyard-attempts`, body text.
async fn post_raw(server: &TestServer, path: &str, body: &str) -> (u16, String, String, String) {
    let response = server
        .http
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
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

/// `POST path` with a JSON body: status and JSON answer.
async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let (status, _, _, text) = post_raw(server, path, &body.to_string()).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

/// The bodies (as text) of the requests `mock` received on `path`.
fn received(mock: &MockUpstream, path: &str) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect()
}

/// A llama.cpp-flavoured mock listing `models`.
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

fn provider(name: &str, url: &str) -> String {
    format!(
        "[[providers]]\nname = \"{name}\"\nkind = \"llama-cpp\"\nbase_url = \"{url}\"\n\
         probe_interval_ms = 600000\n"
    )
}

#[tokio::test]
async fn embeddings_pass_through_with_the_model_rewritten_both_ways_and_usage_logged() {
    let server = TestServer::start().await;
    // Odd spacing, an unknown member and a number spelling serde would
    // change: all must reach the upstream as sent.
    let client_body = "{ \"input\" : [\"hello wide world\", \"x\"],\n \"model\":  \"mock/mock-model\" , \"encoding_format\":\"float\", \"x_extra\": {\"keep\": 1.50} }";
    let (status, served, attempts, text) = post_raw(&server, "/v1/embeddings", client_body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        (served.as_str(), attempts.as_str()),
        ("mock/mock-model", "1")
    );
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["model"], "mock/mock-model", "{answer}");
    assert_eq!(answer["object"], "list");
    assert_eq!(answer["data"][0]["embedding"], json!([16.0, 3.0, 0.0]));
    assert_eq!(answer["data"][1]["embedding"], json!([1.0, 1.0, 1.0]));
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );
    assert_eq!(
        received(&server.mock, "/v1/embeddings"),
        [client_body.replace("\"mock/mock-model\"", "\"mock-model\"")],
        "only `model` changes on the way up"
    );
    assert!(received(&server.mock, "/v1/chat/completions").is_empty());

    let call = server.only_call().await;
    assert_eq!(call["operation"], "embeddings", "{call}");
    assert_eq!(call["status"], "ok", "{call}");
    assert_eq!(call["stream"], false, "{call}");
    assert_eq!(call["modelId"], "mock/mock-model", "{call}");
    assert_eq!(call["upstreamModel"], "mock-model", "{call}");
    assert_eq!(call["httpStatus"], 200, "{call}");
    assert_eq!(call["usage"]["promptTokens"], 4, "{call}");
    assert_eq!(call["usage"]["totalTokens"], 4, "{call}");
    assert_eq!(call["request"]["input"], json!(["hello wide world", "x"]));

    // A bare id resolves like chat's; the answer names the deployment.
    let (status, answer) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "mock-model", "input": "one two"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "mock/mock-model");
    assert_eq!(answer["data"][0]["embedding"], json!([7.0, 2.0, 0.0]));
    let last: Value =
        serde_json::from_str(received(&server.mock, "/v1/embeddings").last().unwrap()).unwrap();
    assert_eq!(last["model"], "mock-model");
    server.shutdown().await;
}

#[tokio::test]
async fn rerank_passes_through_on_both_paths() {
    let server = TestServer::start().await;
    let body = json!({
        "model": "mock/echo",
        "query": "red apple",
        "documents": ["green apple", "red apple pie", "banana"],
        "top_n": 2,
    });
    for path in ["/v1/rerank", "/v1/reranking"] {
        let (status, answer) = post(&server, path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
        assert_eq!(answer["model"], "mock/echo", "{answer}");
        assert_eq!(
            answer["results"],
            json!([{"index": 1, "relevance_score": 1.0}, {"index": 0, "relevance_score": 0.5}])
        );
        assert_eq!(answer["usage"]["total_tokens"], 8);
    }
    // Both reach the upstream's `/v1/rerank`, model rewritten.
    let sent = received(&server.mock, "/v1/rerank");
    assert_eq!(sent.len(), 2);
    for body in sent {
        let body: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["model"], "echo");
        assert_eq!(body["top_n"], 2);
    }
    let calls = server.wait_calls(2).await;
    assert!(
        calls.iter().all(|c| c["operation"] == "rerank"),
        "{calls:?}"
    );
    assert!(
        calls.iter().all(|c| c["usage"]["promptTokens"] == 8),
        "{calls:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn legacy_completions_pass_through_streamed_and_not() {
    let server = TestServer::start().await;
    let (status, answer) = post(
        &server,
        "/v1/completions",
        &json!({"model": "mock/echo", "prompt": "Once upon a time", "max_tokens": 8}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "mock/echo");
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "echo: Once upon a time");
    let call = server.only_call().await;
    assert_eq!(call["operation"], "completions", "{call}");
    assert_eq!(call["responseText"], "echo: Once upon a time", "{call}");
    assert_eq!(call["finishReason"], "stop", "{call}");
    assert_eq!(call["usage"]["promptTokens"], 4, "{call}");
    assert_eq!(call["usage"]["completionTokens"], 5, "{call}");
    assert_eq!(call["usage"]["totalTokens"], 9, "{call}");

    // Streamed, without asking for usage: Modelyard asks for it (and keeps
    // it for the log) but does not forward the usage chunk.
    let client_body = r#"{"model":"mock/echo","prompt":"one two","stream":true}"#;
    let (status, served, _, text) = post_raw(&server, "/v1/completions", client_body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(served, "mock/echo");
    let events: Vec<&str> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["model"] == "mock/echo"), "{text}");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "{text}");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(streamed, "echo: one two");
    let sent = received(&server.mock, "/v1/completions");
    assert_eq!(
        sent.last().unwrap(),
        r#"{"stream_options":{"include_usage":true},"model":"echo","prompt":"one two","stream":true}"#
    );
    let calls = server.wait_calls(2).await;
    let call = server.call(calls[0]["id"].as_str().unwrap()).await;
    assert_eq!(call["operation"], "completions", "{call}");
    assert_eq!(call["stream"], true, "{call}");
    assert_eq!(call["responseText"], "echo: one two", "{call}");
    assert_eq!(call["usage"]["totalTokens"], 5, "{call}");

    // Asked for: the usage chunk is forwarded, model rewritten.
    let (status, _, _, text) = post_raw(
        &server,
        "/v1/completions",
        r#"{"model":"mock/echo","prompt":"a","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let usage_chunk: Value = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .find(|c| c.get("usage").is_some())
        .unwrap_or_else(|| panic!("no usage chunk: {text}"));
    assert_eq!(usage_chunk["model"], "mock/echo");
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_route_balances_embeddings_and_retries_a_500_on_the_other_target() {
    let (a, b) = (
        mock(&["mock-model", "status:500"]).await,
        mock(&["mock-model"]).await,
    );
    let server = TestServer::builder()
        .providers(&(provider("a", &a.base_url()) + &provider("b", &b.base_url())))
        .extra(
            r#"
[routing]
backoff_ms = 1
cooldown_failures = 100

[[routes]]
name = "emb"
targets = ["a/mock-model", "b/mock-model"]
strategy = "round-robin"
affinity = "none"

[[routes]]
name = "flaky"
targets = ["a/status:500", "b/mock-model"]
strategy = "round-robin"
affinity = "none"
"#,
        )
        .start()
        .await;
    for _ in 0..6 {
        let (status, served, _, text) =
            post_raw(&server, "/v1/embeddings", r#"{"model":"emb","input":"hi"}"#).await;
        assert_eq!(status, 200, "{text}");
        assert!(
            served == "a/mock-model" || served == "b/mock-model",
            "{served}"
        );
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            answer["model"], "emb",
            "the route's name, as the client sent it"
        );
    }
    let (na, nb) = (
        received(&a, "/v1/embeddings").len(),
        received(&b, "/v1/embeddings").len(),
    );
    assert_eq!((na, nb), (3, 3), "round-robin over both targets");
    assert!(received(&a, "/v1/embeddings")
        .iter()
        .chain(received(&b, "/v1/embeddings").iter())
        .all(|body| body == r#"{"model":"mock-model","input":"hi"}"#));

    // The 500 is retried on b; every answer comes from b.
    for _ in 0..4 {
        let (status, served, _, text) = post_raw(
            &server,
            "/v1/embeddings",
            r#"{"model":"flaky","input":"hi"}"#,
        )
        .await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(served, "b/mock-model");
    }
    let to_a: Vec<String> = received(&a, "/v1/embeddings")[na..].to_vec();
    assert!(!to_a.is_empty(), "round-robin tried a at least once");
    assert!(
        to_a.iter()
            .all(|b| b == r#"{"model":"status:500","input":"hi"}"#),
        "{to_a:?}"
    );
    assert_eq!(received(&b, "/v1/embeddings").len(), nb + 4);
    // The failed attempts are in the log: status 500 on a, attempt 1, then b.
    let calls = server.wait_calls(6 + 4 + to_a.len()).await;
    let failed: Vec<&Value> = calls.iter().filter(|c| c["status"] == "error").collect();
    assert_eq!(failed.len(), to_a.len(), "{calls:?}");
    for call in failed {
        assert_eq!(call["operation"], "embeddings");
        assert_eq!(call["modelId"], "a/status:500");
        assert_eq!(call["httpStatus"], 500);
        assert_eq!(call["attempt"], 1);
        assert_eq!(call["route"], "flaky");
    }
    assert!(calls
        .iter()
        .filter(|c| c["status"] == "ok" && c["route"] == "flaky")
        .all(|c| c["modelId"] == "b/mock-model"));
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_openai_envelopes() {
    let server = TestServer::builder()
        .listed(&[
            "echo",
            "status:400",
            "leak-auth",
            "inband-error",
            "malformed",
        ])
        .start()
        .await;
    // (path, body, status, param, code)
    type Case = (
        &'static str,
        Value,
        u16,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "/v1/embeddings",
            json!({"model": "mock/echo"}),
            400,
            Some("input"),
            None,
        ),
        (
            "/v1/embeddings",
            json!({"model": "mock/echo", "input": {"a": 1}}),
            400,
            Some("input"),
            None,
        ),
        (
            "/v1/rerank",
            json!({"model": "mock/echo", "documents": []}),
            400,
            Some("query"),
            None,
        ),
        (
            "/v1/rerank",
            json!({"model": "mock/echo", "query": "q"}),
            400,
            Some("documents"),
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "mock/echo"}),
            400,
            Some("prompt"),
            None,
        ),
        (
            "/v1/completions",
            json!({"model": "mock/echo", "prompt": "x", "max_tokens": 100_000_000}),
            400,
            Some("max_tokens"),
            None,
        ),
        (
            "/v1/embeddings",
            json!({"model": "mock/no-such-model", "input": "x"}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
        (
            "/v1/rerank",
            json!({"model": "nope/echo", "query": "q", "documents": ["d"]}),
            404,
            Some("model"),
            Some("model_not_found"),
        ),
    ];
    for (path, body, status, param, code) in cases {
        let (got, answer) = post(&server, path, &body).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
        assert_eq!(
            answer["error"]["param"],
            json!(param),
            "{path} {body}: {answer}"
        );
        assert_eq!(
            answer["error"]["code"],
            json!(code),
            "{path} {body}: {answer}"
        );
    }
    // None of them reached the upstream or the log.
    assert!(server
        .mock
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("/v1/") || r.path == "/v1/models"));

    // Upstream statuses: passed through with the upstream's message; the
    // provider refusing Modelyard's key is a 502; in-band errors are 502s.
    let (status, answer) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "mock/status:400", "input": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["type"], "mock_error");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock upstream status 400"));
    let (status, answer) = post(
        &server,
        "/v1/completions",
        &json!({"model": "mock/leak-auth", "prompt": "x"}),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["code"], "upstream_auth_error");
    let (status, answer) = post(
        &server,
        "/v1/rerank",
        &json!({"model": "mock/inband-error", "query": "q", "documents": ["d"]}),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("mock upstream failed mid-stream"));
    let (status, answer) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "mock/malformed", "input": "x"}),
    )
    .await;
    assert_eq!(status, 502, "{answer}");
    assert_eq!(answer["error"]["type"], "upstream_invalid_response");
    // A streamed completion that fails mid-way ends with an error event.
    let (status, _, _, text) = post_raw(
        &server,
        "/v1/completions",
        r#"{"model":"mock/inband-error","prompt":"a b","stream":true}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!text.contains("[DONE]"), "{text}");
    let last: Value = serde_json::from_str(
        text.trim_end()
            .rsplit("\n\n")
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert!(last["error"]["message"].is_string(), "{text}");
    let calls = server.wait_calls(5).await;
    assert!(calls.iter().all(|c| c["status"] == "error"), "{calls:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn metadata_content_stores_no_input_text() {
    let server = TestServer::builder()
        .storage("content = \"metadata\"")
        .start()
        .await;
    let marker = format!("marker{}", uuid::Uuid::now_v7().simple());
    let requests = [
        (
            "/v1/embeddings",
            json!({"model": "mock/echo", "input": [format!("a {marker}"), "b"], "encoding_format": "float"}),
        ),
        (
            "/v1/rerank",
            json!({"model": "mock/echo", "query": marker, "documents": [marker.clone(), "x", "y"]}),
        ),
        (
            "/v1/completions",
            json!({"model": "mock/echo", "prompt": format!("say {marker}"), "max_tokens": 4}),
        ),
    ];
    for (path, body) in &requests {
        let (status, answer) = post(&server, path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let calls = server.wait_calls(3).await;
    for summary in &calls {
        let call = server.call(summary["id"].as_str().unwrap()).await;
        assert!(!call.to_string().contains(&marker), "{call}");
        assert!(call["usage"]["totalTokens"].as_i64().unwrap() > 0, "{call}");
        let request = &call["request"];
        match call["operation"].as_str().unwrap() {
            "embeddings" => {
                assert_eq!(request["inputOmitted"], 2, "{call}");
                assert_eq!(request["encoding_format"], "float", "{call}");
            }
            "rerank" => {
                assert_eq!(request["queryOmitted"], 1, "{call}");
                assert_eq!(request["documentsOmitted"], 3, "{call}");
            }
            "completions" => {
                assert_eq!(request["promptOmitted"], 1, "{call}");
                assert_eq!(request["max_tokens"], 4, "{call}");
                assert!(call["responseText"].is_null(), "{call}");
            }
            other => panic!("operation {other}"),
        }
    }
    let dir = server.shutdown().await;
    for suffix in ["", "-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(format!("modelyard.db{suffix}"))) {
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "modelyard.db{suffix} holds input text"
            );
        }
    }
}

#[tokio::test]
async fn ollama_embedding_models_are_typed_in_the_catalog_and_model_list() {
    let server = TestServer::builder()
        .providers(
            "[[providers]]\nname = \"olla\"\nkind = \"ollama\"\nbase_url = \"{mock:olla}\"\n",
        )
        .mock(
            "olla",
            MockOptions::new(
                Flavour::Ollama,
                vec![
                    MockModel::new("nomic-embed-text:latest", Some(2048)),
                    MockModel::new("llama3:latest", Some(8192)),
                ],
            ),
        )
        .start()
        .await;
    let catalog = server.get_json("/v1/catalog").await;
    let models = catalog["providers"][0]["models"]
        .as_array()
        .unwrap()
        .clone();
    let by_id = |id: &str| models.iter().find(|m| m["id"] == id).cloned().unwrap();
    assert_eq!(by_id("olla/nomic-embed-text:latest")["type"], "embedding");
    assert!(by_id("olla/llama3:latest").get("type").is_none());
    let listed = server.get_json("/v1/models").await;
    let data = listed["data"].as_array().unwrap();
    let entry = |id: &str| data.iter().find(|m| m["id"] == id).cloned().unwrap();
    assert_eq!(entry("olla/nomic-embed-text:latest")["type"], "embedding");
    assert!(entry("olla/llama3:latest").get("type").is_none());
    // And embeddings reach Ollama's OpenAI-compatible endpoint.
    let (status, answer) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "olla/nomic-embed-text:latest", "input": "hi"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "olla/nomic-embed-text:latest");
    assert_eq!(
        received(server.named("olla"), "/v1/embeddings"),
        [r#"{"model":"nomic-embed-text:latest","input":"hi"}"#]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn guard_and_auth_refusals_on_these_paths_are_openai_envelopes() {
    let server = TestServer::start().await;
    // The guard: a body that is not JSON.
    for path in ["/v1/embeddings", "/v1/rerank", "/v1/completions"] {
        let response = server
            .http
            .post(server.url(path))
            .header("content-type", "text/plain")
            .body("input=x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{path}: {body}");
    }
    // Auth: once a key exists, a request without a valid one is a 401
    // envelope, and a member key is served.
    let (status, created) = post(&server, "/v1/keys", &json!({"role": "member"})).await;
    assert!(status == 200 || status == 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let refused = modelyard_testkit::eventually(
        std::time::Duration::from_secs(10),
        "keys are required",
        || async {
            let response = server
                .http
                .post(server.url("/v1/embeddings"))
                .bearer_auth("mk_not-a-key")
                .json(&json!({"model": "mock/echo", "input": "x"}))
                .send()
                .await
                .unwrap();
            match response.status().as_u16() {
                401 => Ok(response.json::<Value>().await.unwrap()),
                other => Err(other),
            }
        },
    )
    .await;
    assert_eq!(refused["error"]["code"], "invalid_api_key", "{refused}");
    let response = server
        .http
        .post(server.url("/v1/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "mock/echo", "prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn provider_rules_apply_to_completions_and_headers_to_all() {
    let server = TestServer::builder()
        .providers(
            r#"
[[providers]]
name = "mock"
kind = "openai"
base_url = "{mock}"
set_params = { temperature = 0.3 }
strip_params = ["top_p"]
headers = { "X-Title" = "modelyard-test" }
"#,
        )
        .start()
        .await;
    let (status, answer) = post(
        &server,
        "/v1/completions",
        &json!({"model": "mock/echo", "prompt": "x", "temperature": 1.0, "top_p": 0.5}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let embed = r#"{"model":"mock/echo","input":"x","top_p":0.5}"#;
    let (status, _, _, text) = post_raw(&server, "/v1/embeddings", embed).await;
    assert_eq!(status, 200, "{text}");
    let completion: Value =
        serde_json::from_str(&received(&server.mock, "/v1/completions")[0]).unwrap();
    assert_eq!(completion["temperature"], 0.3, "{completion}");
    assert!(completion.get("top_p").is_none(), "{completion}");
    // Sampling rules are not an embedding's: only `model` changes.
    assert_eq!(
        received(&server.mock, "/v1/embeddings"),
        [r#"{"model":"echo","input":"x","top_p":0.5}"#]
    );
    for request in server.mock.requests().iter().filter(|r| r.method == "POST") {
        assert!(
            request
                .headers
                .iter()
                .any(|(k, v)| k == "x-title" && v == "modelyard-test"),
            "{}",
            request.path
        );
    }
    server.shutdown().await;
}
