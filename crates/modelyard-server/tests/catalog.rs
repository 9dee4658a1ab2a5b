//! End-to-end tests of providers, discovery, the catalog, favorites and
//! model resolution: the real server in front of several in-process mock
//! upstreams (one per provider), driven over HTTP.
//!
//! Probes are forced with `POST /v1/providers/{name}/refresh` rather than
//! waited for; every wait is a bounded poll.

mod common;

use std::time::Duration;

use common::{chat_body, error_envelope, TestServer};
use modelyard_testkit::{
    eventually, Flavour, MockModel, MockOptions, MockUpstream, RecordedRequest,
};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(5);

// -------------------------------------------------------------------------
// Helpers

/// Mock options: `(id, context window, loaded)` per model.
fn mock(flavour: Flavour, models: &[(&str, Option<u64>, bool)]) -> MockOptions {
    MockOptions::new(
        flavour,
        models
            .iter()
            .map(|(id, ctx, loaded)| MockModel::new(*id, *ctx).with_loaded(*loaded))
            .collect(),
    )
}

/// A `[[providers]]` entry probed every second; `url` may use `{mock:NAME}`;
/// `more` is extra TOML keys of the entry.
fn provider(name: &str, kind: &str, url: &str, more: &str) -> String {
    format!(
        "\n[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{url}\"\nprobe_interval_ms = 1000\n{more}\n"
    )
}

/// The chat requests a mock received, in order.
fn chats(mock: &MockUpstream) -> Vec<RecordedRequest> {
    mock.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/chat/completions"))
        .collect()
}

/// Sends `method path` with an optional JSON body; returns status,
/// content type and the body as JSON (`null` when empty).
async fn send(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String, Value) {
    let mut request = server.http.request(method.clone(), server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"))
    };
    (status, content_type, value)
}

/// Asserts a problem document with `status` and returns it.
async fn problem(
    server: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let (got, content_type, value) = send(server, method.clone(), path, body).await;
    assert_eq!(got, status, "{method} {path}: {value}");
    assert_eq!(
        content_type, "application/problem+json",
        "{method} {path}: {value}"
    );
    assert_eq!(value["status"], status, "{value}");
    assert!(value["title"].is_string(), "{value}");
    assert!(value["detail"].is_string(), "{value}");
    value
}

/// `POST /v1/providers/{name}/refresh`, asserting 200; the provider's view.
async fn refresh(server: &TestServer, name: &str) -> Value {
    let path = format!("/v1/providers/{name}/refresh");
    let (status, _, body) = send(server, reqwest::Method::POST, &path, None).await;
    assert_eq!(status, 200, "refresh {name}: {body}");
    body
}

/// `POST /v1/favorites {modelId}`; returns the status and body.
async fn add_favorite(server: &TestServer, id: &str) -> (u16, Value) {
    let (status, _, body) = send(
        server,
        reqwest::Method::POST,
        "/v1/favorites",
        Some(json!({ "modelId": id })),
    )
    .await;
    (status, body)
}

/// The ids of `GET /v1/favorites`, in order.
async fn favorite_ids(server: &TestServer) -> Vec<String> {
    ids(&server.get_json("/v1/favorites").await["data"], "modelId")
}

/// The `key` strings of a JSON array.
fn ids(list: &Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("an array: {list}"))
        .iter()
        .map(|v| v[key].as_str().expect("string id").to_owned())
        .collect()
}

/// The catalog group of provider `name`.
fn group<'a>(catalog: &'a Value, name: &str) -> &'a Value {
    catalog["providers"]
        .as_array()
        .expect("providers array")
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("group {name}: {catalog:#}"))
}

/// The model `id` (composite) of a group or list.
fn entry<'a>(models: &'a Value, id: &str) -> &'a Value {
    models
        .as_array()
        .expect("models array")
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("model {id}: {models:#}"))
}

/// Sends a chat and returns status and body.
async fn chat(server: &TestServer, model: &str) -> (u16, Value) {
    let response = server.chat(&chat_body(model, false)).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).expect("JSON body"))
}

// -------------------------------------------------------------------------
// 1. One provider of every kind

#[tokio::test]
async fn every_kind_reports_its_own_context_windows_from_its_own_endpoint() {
    let providers = [
        provider("lc", "llama-cpp", "{mock:lc}", ""),
        provider("ls", "llama-swap", "{mock:ls}", ""),
        provider("vl", "vllm", "{mock:vl}/v1", ""),
        provider("ol", "ollama", "{mock:ol}", ""),
        provider("or", "openrouter", "{mock:or}/api/v1", ""),
        provider("oa", "openai", "{mock:oa}/v1", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock(
            "lc",
            mock(Flavour::LlamaCpp, &[("lc-model", Some(11_111), true)]),
        )
        .mock(
            "ls",
            mock(
                Flavour::LlamaSwap,
                &[
                    ("swap-loaded", Some(22_222), true),
                    ("swap-idle", Some(22_333), false),
                ],
            ),
        )
        .mock(
            "vl",
            mock(Flavour::Vllm, &[("vllm-model", Some(33_333), true)]),
        )
        .mock(
            "ol",
            mock(
                Flavour::Ollama,
                &[
                    ("llama3:8b", Some(44_444), true),
                    ("mistral:7b", Some(44_555), false),
                ],
            ),
        )
        .mock(
            "or",
            mock(
                Flavour::OpenRouter,
                &[("vendor/model-x", Some(55_555), true)],
            ),
        )
        .mock(
            "oa",
            mock(Flavour::OpenAi, &[("gpt-x", Some(66_666), true)]),
        )
        .providers(&providers)
        .start()
        .await;

    let catalog = server.get_json("/v1/catalog").await;
    let groups = catalog["providers"].as_array().expect("providers");
    assert_eq!(
        ids(&catalog["providers"], "name"),
        ["lc", "ls", "vl", "ol", "or", "oa"],
        "one group per provider, in config order"
    );
    for (group, kind) in groups.iter().zip([
        "llama-cpp",
        "llama-swap",
        "vllm",
        "ollama",
        "openrouter",
        "openai",
    ]) {
        assert_eq!(group["status"], "online", "{group:#}");
        assert_eq!(group["kind"], kind, "{group:#}");
        assert!(group["lastCheckedAt"].is_string(), "{group:#}");
        assert!(group["lastOkAt"].is_string(), "{group:#}");
        assert_eq!(group["lastError"], Value::Null, "{group:#}");
    }

    // (provider, upstream model, context window, from, loaded (None: not checked), display name)
    type Expected<'a> = (
        &'a str,
        &'a str,
        Option<u64>,
        Option<&'a str>,
        Option<Value>,
        &'a str,
    );
    let expected: [Expected<'_>; 8] = [
        (
            "lc",
            "lc-model",
            Some(11_111),
            Some("/props n_ctx"),
            None,
            "lc-model",
        ),
        (
            "ls",
            "swap-loaded",
            Some(22_222),
            Some("/upstream/{model}/props n_ctx"),
            Some(json!(true)),
            "swap-loaded",
        ),
        (
            "ls",
            "swap-idle",
            None,
            None,
            Some(json!(false)),
            "swap-idle",
        ),
        (
            "vl",
            "vllm-model",
            Some(33_333),
            Some("/v1/models max_model_len"),
            None,
            "vllm-model",
        ),
        (
            "ol",
            "llama3:8b",
            Some(44_444),
            Some("/api/ps context_length"),
            Some(json!(true)),
            "llama3:8b",
        ),
        (
            "ol",
            "mistral:7b",
            Some(44_555),
            Some("/api/show model_info.context_length"),
            Some(json!(false)),
            "mistral:7b",
        ),
        (
            "or",
            "vendor/model-x",
            Some(55_555),
            Some("/v1/models context_length"),
            Some(Value::Null),
            "Display vendor/model-x",
        ),
        ("oa", "gpt-x", None, None, Some(Value::Null), "gpt-x"),
    ];
    for name in ["lc", "ls", "vl", "ol", "or", "oa"] {
        let want: Vec<String> = expected
            .iter()
            .filter(|e| e.0 == name)
            .map(|e| format!("{}/{}", e.0, e.1))
            .collect();
        assert_eq!(
            ids(&group(&catalog, name)["models"], "id"),
            want,
            "models of {name} in the provider's order"
        );
    }
    for (name, model, context, from, loaded, display) in expected {
        let id = format!("{name}/{model}");
        let m = entry(&group(&catalog, name)["models"], &id);
        assert_eq!(m["provider"], name, "{m}");
        assert_eq!(m["model"], model, "{m}");
        assert_eq!(m["displayName"], display, "{m}");
        assert_eq!(m["contextWindow"], json!(context), "{id}: {m}");
        let source = context.map(|_| "provider");
        assert_eq!(m["contextWindowSource"], json!(source), "{id}: {m}");
        assert_eq!(m["contextWindowFrom"], json!(from), "{id}: {m}");
        if let Some(loaded) = loaded {
            assert_eq!(m["loaded"], loaded, "{id}: {m}");
        }
        assert_eq!(m["online"], true, "{m}");
        assert_eq!(m["favorite"], false, "{m}");
    }
    // The OpenAI-compatible list agrees.
    let models = server.get_json("/v1/models").await;
    assert_eq!(models["data"].as_array().unwrap().len(), 8, "{models:#}");
    assert_eq!(
        entry(&models["data"], "ol/mistral:7b")["context_window"],
        44_555
    );
    // Chat reaches OpenRouter through its `/api/v1` base.
    let (status, body) = chat(&server, "or/vendor/model-x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "or/vendor/model-x");
    let sent = chats(server.named("or"));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/api/v1/chat/completions");
    assert_eq!(sent[0].json().unwrap()["model"], "vendor/model-x");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 2. The same model name on several hosts

#[tokio::test]
async fn the_same_model_on_two_hosts_stays_two_models() {
    let providers = [
        provider("a", "llama-cpp", "{mock:a}", ""),
        provider("b", "vllm", "{mock:b}", ""),
        provider("embedding", "openai", "{mock:embedding}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock(
            "a",
            mock(Flavour::LlamaCpp, &[("qwen3-8b", Some(8_192), true)]),
        )
        .mock(
            "b",
            mock(Flavour::Vllm, &[("qwen3-8b", Some(32_768), true)]),
        )
        .mock(
            "embedding",
            mock(Flavour::OpenAi, &[("qwen3-8b", Some(512), true)]),
        )
        .providers(&providers)
        .start()
        .await;

    let catalog = server.get_json("/v1/catalog").await;
    let a = entry(&group(&catalog, "a")["models"], "a/qwen3-8b");
    let b = entry(&group(&catalog, "b")["models"], "b/qwen3-8b");
    let e = entry(
        &group(&catalog, "embedding")["models"],
        "embedding/qwen3-8b",
    );
    assert_eq!(a["contextWindow"], 8_192, "{a}");
    assert_eq!(b["contextWindow"], 32_768, "{b}");
    assert_eq!(
        e["contextWindow"],
        Value::Null,
        "the openai host reports none and borrows none: {e}"
    );
    let list = server.get_json("/v1/models").await;
    assert_eq!(
        ids(&list["data"], "id"),
        ["a/qwen3-8b", "b/qwen3-8b", "embedding/qwen3-8b"]
    );
    assert_eq!(entry(&list["data"], "a/qwen3-8b")["context_window"], 8_192);
    assert_eq!(entry(&list["data"], "b/qwen3-8b")["context_window"], 32_768);

    let (status, body) = chat(&server, "b/qwen3-8b").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "b/qwen3-8b");
    assert_eq!(chats(server.named("a")).len(), 0, "a got nothing");
    assert_eq!(chats(server.named("embedding")).len(), 0);
    let to_b = chats(server.named("b"));
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].json().unwrap()["model"], "qwen3-8b");

    let (status, body) = chat(&server, "embedding/qwen3-8b").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(chats(server.named("embedding")).len(), 1);
    assert_eq!(chats(server.named("a")).len(), 0);
    assert_eq!(chats(server.named("b")).len(), 1);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 3. Config overrides

#[tokio::test]
async fn config_overrides_win_and_declared_models_appear() {
    let more = r#"
[[providers.models]]
id = "x"
context_window = 1234
display_name = "X"

[[providers.models]]
id = "declared-only"
context_window = 2048
"#;
    let server = TestServer::builder()
        .mock(
            "h",
            mock(
                Flavour::Vllm,
                &[("x", Some(9_999), true), ("y", Some(7_777), true)],
            ),
        )
        .providers(&provider("h", "vllm", "{mock:h}", more))
        .start()
        .await;

    let catalog = server.get_json("/v1/catalog").await;
    let models = &group(&catalog, "h")["models"];
    assert_eq!(ids(models, "id"), ["h/x", "h/y", "h/declared-only"]);
    let x = entry(models, "h/x");
    assert_eq!(x["contextWindow"], 1234, "{x}");
    assert_eq!(x["contextWindowSource"], "config", "{x}");
    assert_eq!(x["contextWindowFrom"], Value::Null, "{x}");
    assert_eq!(x["displayName"], "X", "{x}");
    let y = entry(models, "h/y");
    assert_eq!(y["contextWindow"], 7_777, "{y}");
    assert_eq!(y["contextWindowSource"], "provider", "{y}");
    let declared = entry(models, "h/declared-only");
    assert_eq!(declared["contextWindow"], 2048, "{declared}");
    assert_eq!(declared["contextWindowSource"], "config", "{declared}");
    assert_eq!(declared["displayName"], "declared-only", "{declared}");
    assert_eq!(declared["loaded"], Value::Null, "{declared}");

    let list = server.get_json("/v1/models").await;
    assert_eq!(entry(&list["data"], "h/x")["context_window"], 1234);
    assert_eq!(
        entry(&list["data"], "h/declared-only")["context_window"],
        2048
    );
    let (status, body) = chat(&server, "h/declared-only").await;
    assert_eq!(status, 200, "a declared model is routable: {body}");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 4. A provider going offline and coming back

#[tokio::test]
async fn offline_providers_hide_their_favorites_without_deleting_them() {
    let providers = [
        provider(
            "a",
            "llama-cpp",
            "{mock:a}",
            "api_key_env = \"MODELYARD_TEST_A_KEY\"",
        ),
        provider("b", "openai", "{mock:b}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock(
            "a",
            mock(Flavour::LlamaCpp, &[("qwen3-8b", Some(8_192), true)]),
        )
        .mock("b", mock(Flavour::OpenAi, &[("other", None, true)]))
        .providers(&providers)
        .env(&[("MODELYARD_TEST_A_KEY", "sk-secret-a-123")])
        .start()
        .await;
    assert_eq!(add_favorite(&server, "a/qwen3-8b").await.0, 201);
    assert_eq!(add_favorite(&server, "b/other").await.0, 201);
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(ids(&catalog["favorites"], "id"), ["a/qwen3-8b", "b/other"]);

    server.named("a").set_down(true);
    let view = refresh(&server, "a").await;
    assert_eq!(view["status"], "offline", "{view:#}");

    let catalog = server.get_json("/v1/catalog").await;
    let a = group(&catalog, "a");
    assert_eq!(a["status"], "offline", "{a:#}");
    let error = a["lastError"].as_str().expect("lastError").to_owned();
    assert!(!error.is_empty());
    assert!(!error.contains("sk-secret"), "no key in {error}");
    assert!(!error.contains('?'), "no query string in {error}");
    assert!(a["lastOkAt"].is_string(), "the last success is kept: {a:#}");
    assert_eq!(a["models"], json!([]), "offline models are hidden: {a:#}");
    assert_eq!(
        ids(&catalog["favorites"], "id"),
        ["b/other"],
        "the offline favorite is hidden"
    );
    let favorites = server.get_json("/v1/favorites").await;
    assert_eq!(
        ids(&favorites["data"], "modelId"),
        ["a/qwen3-8b", "b/other"]
    );
    assert_eq!(favorites["data"][0]["visible"], false, "{favorites:#}");
    assert_eq!(favorites["data"][0]["position"], 0, "{favorites:#}");
    assert_eq!(favorites["data"][1]["visible"], true, "{favorites:#}");
    let list = server.get_json("/v1/models").await;
    assert_eq!(
        ids(&list["data"], "id"),
        ["b/other"],
        "no a/* while offline"
    );

    let all = server.get_json("/v1/catalog?includeOffline=true").await;
    let hidden = entry(&group(&all, "a")["models"], "a/qwen3-8b");
    assert_eq!(hidden["online"], false, "{hidden}");
    assert_eq!(hidden["favorite"], true, "{hidden}");
    assert_eq!(
        hidden["contextWindow"], 8_192,
        "last known number: {hidden}"
    );
    assert_eq!(ids(&all["favorites"], "id"), ["b/other"]);

    server.named("a").set_down(false);
    let view = refresh(&server, "a").await;
    assert_eq!(view["status"], "online", "{view:#}");
    assert_eq!(view["lastError"], Value::Null, "{view:#}");
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(
        ids(&catalog["favorites"], "id"),
        ["a/qwen3-8b", "b/other"],
        "the favorite is back in its place"
    );
    let favorites = server.get_json("/v1/favorites").await;
    assert_eq!(favorites["data"][0]["visible"], true, "{favorites:#}");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 5. Disabled providers

#[tokio::test]
async fn disabled_providers_are_shown_with_their_reason_and_never_probed() {
    let providers = [
        provider(
            "locked",
            "openai",
            "{mock:locked}",
            "api_key_env = \"MODELYARD_TEST_UNSET_KEY_XYZ\"",
        ),
        provider("off", "openai", "{mock:off}", "enabled = false"),
        provider("ok", "openai", "{mock:ok}", ""),
    ]
    .concat();
    let models = [("m", None, true)];
    let server = TestServer::builder()
        .mock("locked", mock(Flavour::OpenAi, &models))
        .mock("off", mock(Flavour::OpenAi, &models))
        .mock("ok", mock(Flavour::OpenAi, &models))
        .providers(&providers)
        .start()
        .await;

    let catalog = server.get_json("/v1/catalog").await;
    let locked = group(&catalog, "locked");
    assert_eq!(locked["status"], "disabled", "{locked:#}");
    let reason = locked["disabledReason"].as_str().expect("reason");
    assert!(reason.contains("MODELYARD_TEST_UNSET_KEY_XYZ"), "{reason}");
    let off = group(&catalog, "off");
    assert_eq!(off["status"], "disabled", "{off:#}");
    let reason = off["disabledReason"].as_str().expect("reason");
    assert!(reason.contains("enabled = false"), "{reason}");
    assert_eq!(group(&catalog, "ok")["status"], "online");

    for name in ["locked", "off"] {
        let body = problem(
            &server,
            reqwest::Method::POST,
            &format!("/v1/providers/{name}/refresh"),
            None,
            409,
        )
        .await;
        assert!(
            body["detail"].as_str().unwrap().contains("disabled"),
            "{body}"
        );
    }
    // Probing the enabled provider proves probes run; the disabled hosts saw nothing.
    refresh(&server, "ok").await;
    assert!(!server.named("ok").requests().is_empty());
    assert_eq!(server.named("locked").requests(), vec![], "never probed");
    assert_eq!(server.named("off").requests(), vec![], "never probed");
    let list = server.get_json("/v1/models").await;
    assert_eq!(ids(&list["data"], "id"), ["ok/m"]);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 6. Bare ids

#[tokio::test]
async fn bare_ids_resolve_to_default_then_unique_provider_else_fail() {
    let providers = [
        provider("d", "openai", "{mock:d}", ""),
        provider("u1", "openai", "{mock:u1}", ""),
        provider("u2", "openai", "{mock:u2}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock(
            "d",
            mock(
                Flavour::OpenAi,
                &[("shared", None, true), ("only-d", None, true)],
            ),
        )
        .mock(
            "u1",
            mock(
                Flavour::OpenAi,
                &[
                    ("shared", None, true),
                    ("solo", None, true),
                    ("dup", None, true),
                ],
            ),
        )
        .mock(
            "u2",
            mock(
                Flavour::OpenAi,
                &[("dup", None, true), ("meta-llama/llama-3", None, true)],
            ),
        )
        .providers(&providers)
        .start()
        .await;

    let (status, body) = chat(&server, "shared").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "d/shared", "the default provider wins");
    let (status, body) = chat(&server, "solo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "u1/solo", "the only provider serving it");

    let (status, body) = chat(&server, "meta-llama/llama-3").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["model"], "u2/meta-llama/llama-3",
        "a bare id with a slash whose prefix is no provider"
    );

    let (status, body) = chat(&server, "dup").await;
    assert_eq!(status, 409, "{body}");
    let error = error_envelope(&body);
    assert_eq!(error["code"], "model_ambiguous", "{body}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("u1/dup") && message.contains("u2/dup"),
        "{message}"
    );
    let (status, body) = chat(&server, "nobody").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(error_envelope(&body)["code"], "model_not_found", "{body}");

    let calls = server.wait_calls(3).await;
    assert_eq!(
        calls.len(),
        3,
        "failed resolutions are not calls: {calls:#?}"
    );
    let provider_of = |id: &str| {
        calls
            .iter()
            .find(|c| c["modelId"] == id)
            .unwrap_or_else(|| panic!("call for {id}: {calls:#?}"))["provider"]
            .clone()
    };
    assert_eq!(provider_of("d/shared"), "d");
    assert_eq!(provider_of("u1/solo"), "u1");
    assert_eq!(provider_of("u2/meta-llama/llama-3"), "u2");
    assert_eq!(chats(server.named("d")).len(), 1);
    assert_eq!(chats(server.named("u1")).len(), 1);
    assert_eq!(chats(server.named("u2")).len(), 1);
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 7. Probes never block requests

#[tokio::test]
async fn a_slow_probe_does_not_delay_requests_to_other_providers() {
    let providers = [
        provider(
            "slow",
            "openai",
            "{mock:slow}",
            "timeouts = { probe_ms = 5000 }",
        ),
        provider("fast", "openai", "{mock:fast}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock("slow", mock(Flavour::OpenAi, &[("m", None, true)]))
        .mock("fast", mock(Flavour::OpenAi, &[("m", None, true)]))
        .providers(&providers)
        .start()
        .await;
    let slow = server.named("slow");
    slow.set_discovery_delay_ms(3_000);

    let http = server.http.clone();
    let url = server.url("/v1/providers/slow/refresh");
    let pending = tokio::spawn(async move { http.post(url).send().await });
    eventually(WAIT, "a probe in flight at the slow host", || async {
        slow.in_flight() > 0
    })
    .await;

    let (status, body) = chat(&server, "fast/m").await;
    assert_eq!(status, 200, "{body}");
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(group(&catalog, "slow")["status"], "online", "last snapshot");
    assert!(
        !pending.is_finished(),
        "the chat and the catalog completed while the refresh was still probing"
    );
    pending.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn a_probe_that_times_out_marks_the_provider_offline() {
    let server = TestServer::builder()
        .mock("t", mock(Flavour::OpenAi, &[("m", None, true)]))
        .providers(&provider(
            "t",
            "openai",
            "{mock:t}",
            "timeouts = { probe_ms = 300 }",
        ))
        .start()
        .await;
    assert_eq!(server.get_json("/v1/providers/t").await["status"], "online");
    server.named("t").set_discovery_delay_ms(2_000);
    let view = refresh(&server, "t").await;
    assert_eq!(view["status"], "offline", "{view:#}");
    let error = view["lastError"].as_str().expect("lastError");
    assert!(error.contains("timed out"), "{error}");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 8. Favorites API

fn favorites_toml() -> String {
    [
        provider("a", "openai", "{mock:a}", ""),
        provider("b", "openai", "{mock:b}", ""),
    ]
    .concat()
}

fn favorites_mocks(builder: common::Builder) -> common::Builder {
    builder
        .mock(
            "a",
            mock(
                Flavour::OpenAi,
                &[("qwen3-8b", None, true), ("llama-3", None, true)],
            ),
        )
        .mock("b", mock(Flavour::OpenAi, &[("mistral", None, true)]))
        .providers(&favorites_toml())
}

#[tokio::test]
async fn adding_a_favorite_twice_keeps_one() {
    let server = favorites_mocks(TestServer::builder()).start().await;

    let (status, body) = add_favorite(&server, "a/qwen3-8b").await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(ids(&body["data"], "modelId"), ["a/qwen3-8b"]);
    let (status, body) = add_favorite(&server, "a/qwen3-8b").await;
    assert_eq!(status, 200, "already there: {body}");
    assert_eq!(ids(&body["data"], "modelId"), ["a/qwen3-8b"]);
}

#[tokio::test]
async fn a_favorite_must_be_a_served_model() {
    use reqwest::Method;
    let server = favorites_mocks(TestServer::builder()).start().await;
    // Given `a/qwen3-8b` as a favorite.
    assert_eq!(add_favorite(&server, "a/qwen3-8b").await.0, 201);

    let body = problem(
        &server,
        Method::POST,
        "/v1/favorites",
        Some(json!({"modelId": "a/qwen3-8c"})),
        422,
    )
    .await;
    let suggestions = body["suggestions"]
        .as_array()
        .unwrap_or_else(|| panic!("suggestions: {body}"));
    assert!(suggestions.contains(&json!("a/qwen3-8b")), "{body}");
    let body = problem(
        &server,
        Method::POST,
        "/v1/favorites",
        Some(json!({"modelId": "nope/qwen3-8b"})),
        422,
    )
    .await;
    assert!(body["detail"].as_str().unwrap().contains("nope"), "{body}");
}

#[tokio::test]
async fn favorites_are_reordered_as_a_whole_or_not_at_all() {
    use reqwest::Method;
    let server = favorites_mocks(TestServer::builder()).start().await;
    // Given `a/qwen3-8b` as a favorite.
    assert_eq!(add_favorite(&server, "a/qwen3-8b").await.0, 201);

    assert_eq!(add_favorite(&server, "b/mistral").await.0, 201);
    assert_eq!(favorite_ids(&server).await, ["a/qwen3-8b", "b/mistral"]);

    let order = ["b/mistral", "a/llama-3", "a/qwen3-8b"];
    let (status, _, body) = send(
        &server,
        Method::PUT,
        "/v1/favorites",
        Some(json!({ "favorites": order })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body["data"], "modelId"), order);
    let listed = server.get_json("/v1/favorites").await;
    assert_eq!(ids(&listed["data"], "modelId"), order);
    for (i, favorite) in listed["data"].as_array().unwrap().iter().enumerate() {
        assert_eq!(favorite["position"], i, "{favorite}");
    }
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(ids(&catalog["favorites"], "id"), order);

    problem(
        &server,
        Method::PUT,
        "/v1/favorites",
        Some(json!({"favorites": ["a/llama-3", "b/mistral", "a/llama-3"]})),
        422,
    )
    .await;
    assert_eq!(favorite_ids(&server).await, order, "nothing changed");
}

#[tokio::test]
async fn favorites_are_removed_by_encoded_or_trailing_path_id() {
    use reqwest::Method;
    let server = favorites_mocks(TestServer::builder()).start().await;
    // Given the favorites `b/mistral`, `a/llama-3`, `a/qwen3-8b`.
    let order = ["b/mistral", "a/llama-3", "a/qwen3-8b"];
    for id in ["a/qwen3-8b", "b/mistral", "a/llama-3"] {
        assert_eq!(add_favorite(&server, id).await.0, 201);
    }
    let (status, _, body) = send(
        &server,
        Method::PUT,
        "/v1/favorites",
        Some(json!({ "favorites": order })),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let (status, _, _) = send(&server, Method::DELETE, "/v1/favorites/a%2Fqwen3-8b", None).await;
    assert_eq!(status, 204, "URL-encoded id");
    assert_eq!(favorite_ids(&server).await, ["b/mistral", "a/llama-3"]);
    let (status, _, _) = send(&server, Method::DELETE, "/v1/favorites/a/llama-3", None).await;
    assert_eq!(status, 204, "trailing path");
    assert_eq!(favorite_ids(&server).await, ["b/mistral"]);
    problem(
        &server,
        Method::DELETE,
        "/v1/favorites/a/qwen3-8b",
        None,
        404,
    )
    .await;
}

#[tokio::test]
async fn favorites_are_kept_across_restarts() {
    let server = favorites_mocks(TestServer::builder()).start().await;
    // Given `b/mistral` as a favorite.
    assert_eq!(add_favorite(&server, "b/mistral").await.0, 201);

    assert_eq!(add_favorite(&server, "a/qwen3-8b").await.0, 201);
    let before = favorite_ids(&server).await;
    assert_eq!(before, ["b/mistral", "a/qwen3-8b"]);
    let dir = server.shutdown().await;
    let reopened = favorites_mocks(TestServer::builder().dir(dir))
        .start()
        .await;
    assert_eq!(
        favorite_ids(&reopened).await,
        before,
        "kept across restarts"
    );
    let catalog = reopened.get_json("/v1/catalog").await;
    assert_eq!(ids(&catalog["favorites"], "id"), before);
    reopened.shutdown().await;
}

// -------------------------------------------------------------------------
// 9. Per-provider routing attributes

#[tokio::test]
async fn headers_and_param_rules_apply_to_their_provider_only() {
    let providers = [
        provider(
            "a",
            "openai",
            "{mock:a}",
            "headers = { \"X-Route\" = \"a\" }\nset_params = { temperature = 0.1 }\nstrip_params = [\"seed\"]",
        ),
        provider("b", "openai", "{mock:b}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock("a", mock(Flavour::OpenAi, &[("m", None, true)]))
        .mock("b", mock(Flavour::OpenAi, &[("m", None, true)]))
        .providers(&providers)
        .start()
        .await;
    let body = |model: &str| {
        format!(
            "{{\"model\": \"{model}\", \"messages\": [{{\"role\":\"user\",\"content\":\"hi\"}}], \"temperature\": 0.9, \"seed\": 42}}"
        )
    };

    assert_eq!(server.chat_raw(body("a/m")).await.status(), 200);
    assert_eq!(server.chat_raw(body("b/m")).await.status(), 200);

    let to_a = chats(server.named("a"));
    assert_eq!(to_a.len(), 1);
    assert_eq!(to_a[0].header("x-route"), Some("a"));
    let sent = to_a[0].json().expect("JSON");
    assert_eq!(sent["temperature"], 0.1, "{sent}");
    assert!(sent.get("seed").is_none(), "seed stripped: {sent}");
    assert_eq!(sent["model"], "m");

    let to_b = chats(server.named("b"));
    assert_eq!(to_b.len(), 1);
    assert_eq!(to_b[0].header("x-route"), None);
    assert_eq!(
        String::from_utf8_lossy(&to_b[0].body),
        body("m"),
        "b gets the client's bytes with only the model rewritten"
    );
    assert!(
        server
            .named("b")
            .requests()
            .iter()
            .all(|r| r.header("x-route").is_none()),
        "b's probes carry no header of a"
    );
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 10. /v1/models

#[tokio::test]
async fn models_lists_only_online_providers_with_context_and_provider() {
    let providers = [
        provider("up", "vllm", "{mock:up}", ""),
        provider("down", "llama-cpp", "{mock:down}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock("up", mock(Flavour::Vllm, &[("m1", Some(4_000), true)]))
        .mock(
            "down",
            mock(Flavour::LlamaCpp, &[("m2", Some(5_000), true)]),
        )
        .providers(&providers)
        .start()
        .await;
    let list = server.get_json("/v1/models").await;
    assert_eq!(ids(&list["data"], "id"), ["up/m1", "down/m2"]);

    server.named("down").set_down(true);
    assert_eq!(refresh(&server, "down").await["status"], "offline");
    let list = server.get_json("/v1/models").await;
    assert_eq!(list["object"], "list");
    assert_eq!(ids(&list["data"], "id"), ["up/m1"]);
    let m1 = &list["data"][0];
    assert_eq!(m1["provider"], "up", "{m1}");
    assert_eq!(m1["owned_by"], "up", "{m1}");
    assert_eq!(m1["object"], "model", "{m1}");
    assert_eq!(m1["context_window"], 4_000, "{m1}");
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 11. /v1/providers

/// Given three providers: `a` (llama.cpp, one model), `b` (OpenAI at
/// `/v1`, two models, probed every 5 s) and `locked` (its key is unset).
async fn three_providers() -> TestServer {
    let providers = [
        provider("a", "llama-cpp", "{mock:a}", ""),
        provider("b", "openai", "{mock:b}/v1", "")
            .replace("probe_interval_ms = 1000", "probe_interval_ms = 5000"),
        provider(
            "locked",
            "openai",
            "{mock:locked}",
            "api_key_env = \"MODELYARD_TEST_UNSET_KEY_XYZ\"",
        ),
    ]
    .concat();
    TestServer::builder()
        .mock("a", mock(Flavour::LlamaCpp, &[("m", Some(4_096), true)]))
        .mock(
            "b",
            mock(Flavour::OpenAi, &[("x", None, true), ("y", None, true)]),
        )
        .mock("locked", mock(Flavour::OpenAi, &[("z", None, true)]))
        .providers(&providers)
        .start()
        .await
}

#[tokio::test]
async fn the_provider_list_shows_each_provider_without_models() {
    let server = three_providers().await;

    let list = server.get_json("/v1/providers").await;
    let data = list["data"].as_array().expect("data");
    assert_eq!(ids(&list["data"], "name"), ["a", "b", "locked"]);
    let a = &data[0];
    assert_eq!(a["kind"], "llama-cpp");
    assert_eq!(a["baseUrl"], format!("{}/", server.named("a").base_url()));
    assert_eq!(a["status"], "online");
    assert_eq!(a["modelCount"], 1);
    assert_eq!(a["probeIntervalMs"], 1000);
    assert!(a.get("models").is_none(), "the list has no models: {a}");
    let b = &data[1];
    assert_eq!(b["baseUrl"], format!("{}/v1", server.named("b").base_url()));
    assert_eq!(b["modelCount"], 2);
    assert_eq!(b["probeIntervalMs"], 5000);
    let locked = &data[2];
    assert_eq!(locked["status"], "disabled");
    assert_eq!(locked["modelCount"], 0);
    assert_eq!(locked["lastCheckedAt"], Value::Null);
    for key in [
        "name",
        "kind",
        "baseUrl",
        "status",
        "lastError",
        "disabledReason",
        "lastCheckedAt",
        "lastOkAt",
        "probeIntervalMs",
        "modelCount",
    ] {
        for p in data {
            assert!(p.get(key).is_some(), "{key} in {p}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_provider_detail_lists_its_models() {
    let server = three_providers().await;

    let detail = server.get_json("/v1/providers/b").await;
    assert_eq!(detail["name"], "b");
    assert_eq!(detail["modelCount"], 2);
    assert_eq!(ids(&detail["models"], "id"), ["b/x", "b/y"]);
    assert_eq!(detail["models"][0]["online"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn an_unknown_provider_is_404_naming_the_known_ones() {
    let server = three_providers().await;

    let body = problem(
        &server,
        reqwest::Method::GET,
        "/v1/providers/nope",
        None,
        404,
    )
    .await;
    let detail = body["detail"].as_str().unwrap();
    for name in ["nope", "a", "b", "locked"] {
        assert!(detail.contains(name), "{name} in {detail}");
    }
    problem(
        &server,
        reqwest::Method::POST,
        "/v1/providers/nope/refresh",
        None,
        404,
    )
    .await;
    server.shutdown().await;
}

// -------------------------------------------------------------------------
// 4b. A favorite whose model disappears from an online host

#[tokio::test]
async fn a_favorite_whose_model_disappears_is_hidden_and_returns() {
    let server = TestServer::builder()
        .mock(
            "a",
            mock(
                Flavour::Ollama,
                &[
                    ("qwen3-8b", Some(8_192), true),
                    ("other", Some(4_096), true),
                ],
            ),
        )
        .providers(&provider("a", "ollama", "{mock:a}", ""))
        .start()
        .await;
    assert_eq!(add_favorite(&server, "a/qwen3-8b").await.0, 201);
    assert_eq!(add_favorite(&server, "a/other").await.0, 201);

    // The model is deleted on the host; the provider stays online.
    server
        .named("a")
        .set_models(vec![MockModel::new("other", Some(4_096))]);
    assert_eq!(refresh(&server, "a").await["status"], "online");
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(ids(&catalog["favorites"], "id"), ["a/other"]);
    let favorites = server.get_json("/v1/favorites").await;
    assert_eq!(
        ids(&favorites["data"], "modelId"),
        ["a/qwen3-8b", "a/other"]
    );
    assert_eq!(
        favorites["data"][0]["visible"], false,
        "visible matches the catalog: {favorites:#}"
    );
    assert_eq!(favorites["data"][1]["visible"], true, "{favorites:#}");

    // It is pulled again: back in its place.
    server.named("a").set_models(vec![
        MockModel::new("qwen3-8b", Some(8_192)),
        MockModel::new("other", Some(4_096)),
    ]);
    refresh(&server, "a").await;
    let catalog = server.get_json("/v1/catalog").await;
    assert_eq!(ids(&catalog["favorites"], "id"), ["a/qwen3-8b", "a/other"]);
    let favorites = server.get_json("/v1/favorites").await;
    assert_eq!(favorites["data"][0]["visible"], true, "{favorites:#}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_disabled_default_provider_does_not_capture_bare_ids() {
    let providers = [
        provider(
            "cloud",
            "openai",
            "{mock:cloud}",
            "api_key_env = \"MODELYARD_TEST_UNSET_KEY_XYZ\"\n\n[[providers.models]]\nid = \"shared\"",
        ),
        provider("local", "openai", "{mock:local}", ""),
    ]
    .concat();
    let server = TestServer::builder()
        .mock("cloud", mock(Flavour::OpenAi, &[("shared", None, true)]))
        .mock("local", mock(Flavour::OpenAi, &[("shared", None, true)]))
        .providers(&providers)
        .start()
        .await;
    let (status, body) = chat(&server, "shared").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "local/shared");
    let (status, body) = chat(&server, "cloud/shared").await;
    assert_eq!(status, 503, "{body}");
    assert!(server.named("cloud").requests().is_empty());
    server.shutdown().await;
}
