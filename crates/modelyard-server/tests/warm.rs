//! Loading and unloading models (`POST
//! /v1/providers/{name}/models/{model}/load` and `…/unload`).

#![allow(clippy::unwrap_used)]

mod common;

use common::TestServer;
use modelyard_testkit::{Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

/// `mock` (llama-cpp), `swap` (llama-swap: `sw` not loaded, `slow-first:2500`
/// not loaded, `up` loaded), `ollama` (`llama3:latest` not loaded) and
/// `plain` (openai).
async fn server() -> TestServer {
    let swap = MockOptions::new(
        Flavour::LlamaSwap,
        vec![
            MockModel::new("sw", Some(8192)).with_loaded(false),
            MockModel::new("slow-first:2500", Some(8192)).with_loaded(false),
            MockModel::new("up", Some(8192)),
        ],
    );
    let ollama = MockOptions::new(
        Flavour::Ollama,
        vec![MockModel::new("llama3:latest", Some(8192)).with_loaded(false)],
    );
    TestServer::builder()
        .listed(&["mock-model", "echo", "alpha", "beta"])
        .mock("swap", swap)
        .mock("ollama", ollama)
        .mock("plain", MockOptions::new(Flavour::OpenAi, Vec::new()))
        .providers(
            "[[providers]]\nname = \"mock\"\nkind = \"llama-cpp\"\nbase_url = \"{mock}\"\n\
             [[providers]]\nname = \"swap\"\nkind = \"llama-swap\"\nbase_url = \"{mock:swap}\"\n\
             [[providers]]\nname = \"ollama\"\nkind = \"ollama\"\nbase_url = \"{mock:ollama}\"\n\
             [[providers]]\nname = \"plain\"\nkind = \"openai\"\nbase_url = \"{mock:plain}\"\n\
             [[providers]]\nname = \"plain2\"\nkind = \"openai\"\nbase_url = \"{mock}\"\n",
        )
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .start()
        .await
}

#[tokio::test]
async fn load_and_unload_per_kind() {
    let server = server().await;
    let loaded = |provider: &'static str, model: &'static str| {
        let server = &server;
        async move {
            let detail = server.get_json(&format!("/v1/providers/{provider}")).await;
            detail["models"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["id"] == format!("{provider}/{model}"))
                .map(|m| m["loaded"].clone())
                .unwrap_or(Value::Null)
        }
    };
    assert_eq!(loaded("swap", "sw").await, false);
    // llama-swap.
    let (status, answer) = server
        .post("/v1/providers/swap/models/sw/load", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], true, "{answer}");
    assert_eq!(loaded("swap", "sw").await, true);
    let (status, answer) = server
        .post("/v1/providers/swap/models/sw/unload", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], false, "{answer}");
    assert_eq!(loaded("swap", "sw").await, false);
    let swap = server.named("swap");
    assert!(swap
        .requests()
        .iter()
        .any(|r| r.method == "POST" && r.path == "/api/models/unload/sw"));

    // Ollama: keep_alive -1 loads for good, 0 unloads.
    let (status, answer) = server
        .post("/v1/providers/ollama/models/llama3:latest/load", json!({}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], true, "{answer}");
    let (status, answer) = server
        .post(
            "/v1/providers/ollama/models/llama3:latest/unload",
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["loaded"], false, "{answer}");
    let keep: Vec<Value> = server
        .named("ollama")
        .requests()
        .iter()
        .filter(|r| r.path == "/api/generate")
        .map(|r| r.json().unwrap()["keep_alive"].clone())
        .collect();
    assert_eq!(keep, vec![json!(-1), json!(0)]);

    // Other kinds: 422 load_not_supported.
    for (provider, kind) in [("mock", "llama-cpp"), ("plain", "openai")] {
        for op in ["load", "unload"] {
            let (status, problem) = server
                .post(
                    &format!("/v1/providers/{provider}/models/echo/{op}"),
                    json!({}),
                )
                .await;
            assert_eq!(status, 422, "{problem}");
            assert_eq!(problem["code"], "load_not_supported");
            let detail = problem["detail"].as_str().unwrap();
            assert!(
                detail.contains(&format!("not supported by kind {kind}")),
                "{detail}"
            );
        }
    }
    let (status, problem) = server
        .post("/v1/providers/nope/models/x/load", json!({}))
        .await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "provider_not_found");
    let (status, problem) = server
        .post("/v1/providers/swap/models/nope/load", json!({}))
        .await;
    assert_eq!(status, 404, "{problem}");
    assert_eq!(problem["code"], "model_not_found");
    server.shutdown().await;
}
