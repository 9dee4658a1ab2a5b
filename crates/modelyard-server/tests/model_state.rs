//! Truthful per-model state (`loaded | unloaded | loading | failed |
//! unknown`) from each kind of host: llama.cpp (one model, and router
//! mode), llama-swap (with its TTL), Ollama, LM Studio, vLLM and a plain
//! OpenAI-compatible server; loading and unloading in llama.cpp's router
//! mode; the warm path and `model.loading` for a router-mode model.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

async fn fleet() -> TestServer {
    let router = MockOptions::new(
        Flavour::LlamaCppRouter,
        vec![
            MockModel::new("r-loaded", Some(4096)),
            MockModel::new("r-unloaded", None).with_loaded(false),
            MockModel::new("r-loading", None).with_state("loading"),
            MockModel::new("r-failed", None).with_state("failed"),
        ],
    );
    let swap = MockOptions::new(
        Flavour::LlamaSwap,
        vec![
            MockModel::new("s-ready", Some(8192)),
            MockModel::new("s-starting", Some(8192)).with_state("loading"),
            MockModel::new("s-off", Some(8192)).with_loaded(false),
        ],
    );
    let ollama = MockOptions::new(
        Flavour::Ollama,
        vec![
            MockModel::new("o-up:latest", Some(8192)),
            MockModel::new("o-down:latest", Some(8192)).with_loaded(false),
        ],
    );
    let lmstudio = MockOptions::new(
        Flavour::LmStudio,
        vec![
            MockModel::new("l-loaded", Some(4096)),
            MockModel::new("l-idle", Some(16384)).with_loaded(false),
            MockModel::new("l-embed", Some(2048)).embedding(),
        ],
    );
    TestServer::builder()
        .listed(&["mock-model"])
        .mock("router", router)
        .mock("swap", swap)
        .mock("ollama", ollama)
        .mock("lmstudio", lmstudio)
        .mock("vllm", MockOptions::new(Flavour::Vllm, vec![MockModel::new("v", Some(1024))]))
        .mock("plain", MockOptions::new(Flavour::OpenAi, vec![MockModel::new("p", None)]))
        .providers(
            "[[providers]]\nname = \"one\"\nkind = \"llama-cpp\"\nbase_url = \"{mock}\"\n\
             [[providers]]\nname = \"router\"\nkind = \"llama-cpp\"\nbase_url = \"{mock:router}\"\n\
             [[providers]]\nname = \"swap\"\nkind = \"llama-swap\"\nbase_url = \"{mock:swap}\"\n\
             [[providers]]\nname = \"ollama\"\nkind = \"ollama\"\nbase_url = \"{mock:ollama}\"\n\
             [[providers]]\nname = \"lmstudio\"\nkind = \"lmstudio\"\nbase_url = \"{mock:lmstudio}\"\n\
             [[providers]]\nname = \"vllm\"\nkind = \"vllm\"\nbase_url = \"{mock:vllm}\"\n\
             [[providers]]\nname = \"plain\"\nkind = \"openai\"\nbase_url = \"{mock:plain}\"\n",
        )
        .start()
        .await
}

/// The catalog entry of `provider/model` from `GET /v1/providers/{provider}`.
async fn entry(server: &TestServer, provider: &str, model: &str) -> Value {
    let detail = server.get_json(&format!("/v1/providers/{provider}")).await;
    detail["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{detail}"))
        .iter()
        .find(|m| m["id"] == format!("{provider}/{model}"))
        .cloned()
        .unwrap_or_else(|| panic!("{provider}/{model} not in {detail}"))
}

#[tokio::test]
async fn every_kind_reports_each_models_state_as_its_host_says() {
    let server = fleet().await;
    let expected = [
        ("one", "mock-model", "loaded", json!(true)),
        ("router", "r-loaded", "loaded", json!(true)),
        ("router", "r-unloaded", "unloaded", json!(false)),
        ("router", "r-loading", "loading", json!(false)),
        ("router", "r-failed", "failed", json!(false)),
        ("swap", "s-ready", "loaded", json!(true)),
        ("swap", "s-starting", "loading", json!(false)),
        ("swap", "s-off", "unloaded", json!(false)),
        ("ollama", "o-up:latest", "loaded", json!(true)),
        ("ollama", "o-down:latest", "unloaded", json!(false)),
        ("lmstudio", "l-loaded", "loaded", json!(true)),
        ("lmstudio", "l-idle", "unloaded", json!(false)),
        ("vllm", "v", "loaded", json!(true)),
        ("plain", "p", "unknown", Value::Null),
    ];
    for (provider, model, state, loaded) in expected {
        let m = entry(&server, provider, model).await;
        assert_eq!(m["state"], state, "{provider}/{model}: {m}");
        assert_eq!(m["loaded"], loaded, "{provider}/{model}: {m}");
    }
    // llama-swap says how long a loaded model stays while idle.
    assert_eq!(entry(&server, "swap", "s-ready").await["ttlSeconds"], 300);
    assert_eq!(
        entry(&server, "swap", "s-off").await["ttlSeconds"],
        Value::Null
    );
    // LM Studio: a loaded model's window is what it was loaded with, an
    // idle one's what the model supports; embedding models are typed.
    let loaded = entry(&server, "lmstudio", "l-loaded").await;
    assert_eq!(loaded["contextWindow"], 4096, "{loaded}");
    assert_eq!(
        loaded["contextWindowFrom"],
        "/api/v0/models loaded_context_length"
    );
    let idle = entry(&server, "lmstudio", "l-idle").await;
    assert_eq!(idle["contextWindow"], 32768, "{idle}");
    assert_eq!(
        idle["contextWindowFrom"],
        "/api/v0/models max_context_length"
    );
    assert_eq!(
        entry(&server, "lmstudio", "l-embed").await["type"],
        "embedding"
    );
    // A router-mode model's window is not guessed from another model's.
    assert_eq!(
        entry(&server, "router", "r-unloaded").await["contextWindow"],
        Value::Null
    );
    assert_eq!(
        entry(&server, "router", "r-loaded").await["contextWindow"],
        4096
    );
    server.shutdown().await;
}

#[tokio::test]
async fn router_mode_loads_and_unloads_and_the_state_follows() {
    let server = fleet().await;
    let (status, answer) = server
        .post("/v1/providers/router/models/r-unloaded/load", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], true, "{answer}");
    assert_eq!(
        entry(&server, "router", "r-unloaded").await["state"],
        "loaded"
    );
    let (status, answer) = server
        .post("/v1/providers/router/models/r-loaded/unload", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], false, "{answer}");
    assert_eq!(
        entry(&server, "router", "r-loaded").await["state"],
        "unloaded"
    );
    let sent: Vec<(String, Value)> = server
        .named("router")
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/models/"))
        .map(|r| (r.path.clone(), r.json().unwrap()))
        .collect();
    assert_eq!(
        sent,
        vec![
            ("/models/load".to_owned(), json!({"model": "r-unloaded"})),
            ("/models/unload".to_owned(), json!({"model": "r-loaded"})),
        ]
    );
    // A llama-server with one model cannot, and says which kinds can.
    let (status, problem) = server
        .post("/v1/providers/one/models/mock-model/load", json!({}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "load_not_supported");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("llama-cpp in router mode"));
    server.shutdown().await;
}

#[tokio::test]
async fn warming_a_router_mode_model_that_is_not_loaded_loads_it() {
    let server = fleet().await;
    let (status, conv) = server
        .post("/v1/conversations", json!({"model": "router/r-unloaded"}))
        .await;
    assert_eq!(status, 201, "{conv}");
    let id = conv["id"].as_str().unwrap();
    let (status, warmed) = server
        .post(&format!("/v1/conversations/{id}/warm"), json!({}))
        .await;
    assert_eq!(status, 200, "{warmed}");
    assert_eq!(warmed["action"], "loaded", "{warmed}");
    eventually(LIMIT, "the catalog says loaded", || async {
        entry(&server, "router", "r-unloaded").await["state"] == "loaded"
    })
    .await;
    assert!(server
        .named("router")
        .requests()
        .iter()
        .any(|r| r.path == "/models/load"));
    server.shutdown().await;
}
