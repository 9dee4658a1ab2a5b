//! The warm path (`POST /v1/conversations/{id}/warm`), loading and
//! unloading models (`POST /v1/providers/{name}/models/{model}/load` and
//! `…/unload`) and the `model.loading` transient event.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::conv::ends_turn;
use common::TestServer;
use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

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
        .extra(
            "[defaults]\nmodel = \"mock/mock-model\"\n\
             [[routes]]\nname = \"pair\"\ntargets = [\"mock/alpha\", \"mock/beta\"]\n",
        )
        .start()
        .await
}

async fn created(server: &TestServer, path: &str, body: Value) -> String {
    let (status, value) = server.post(path, body.clone()).await;
    assert_eq!(status, 201, "POST {path} {body}: {value}");
    value["id"].as_str().unwrap().to_owned()
}

async fn warm(server: &TestServer, conv: &str, body: Value) -> Value {
    let (status, answer) = server
        .post(&format!("/v1/conversations/{conv}/warm"), body.clone())
        .await;
    assert_eq!(status, 200, "warm {body}: {answer}");
    answer
}

/// The call of session `session_id`, full view.
async fn session_call(server: &TestServer, session_id: &str) -> Value {
    let id = eventually(
        LIMIT,
        &format!("session {session_id} recorded"),
        || async move {
            let calls = server.calls().await;
            calls
                .iter()
                .find(|c| c["sessionId"] == session_id)
                .map(|call| call["id"].as_str().unwrap().to_owned())
                .ok_or(calls)
        },
    )
    .await;
    server.call(&id).await
}

/// The chat completions the `mock` provider received, with `max_tokens: 1`
/// (warms) or not (turns).
fn chats(server: &TestServer, warm: bool) -> Vec<Value> {
    server
        .mock_chats()
        .into_iter()
        .filter(|c| (c["max_tokens"] == 1) == warm)
        .collect()
}

#[tokio::test]
async fn warm_resolves_as_the_next_turn_through_every_source() {
    let server = server().await;
    let conv = created(&server, "/v1/conversations", json!({})).await;
    let path = format!("/v1/conversations/{conv}");
    // Each source in turn, from the last to the first: the warm names what
    // the next turn then uses.
    let default_cfg = created(&server, "/v1/llms", json!({"model": "mock/alpha"})).await;
    let chat_cfg = created(&server, "/v1/llms", json!({"model": "mock/beta"})).await;
    let steps: Vec<(Option<Value>, Value, &str, &str)> = vec![
        (None, json!({}), "mock/mock-model", "serverDefault"),
        (
            Some(json!({"llmId": default_cfg})),
            json!({}),
            "mock/alpha",
            "conversationConfig",
        ),
        (
            Some(json!({"llmOverrides": {"chat": chat_cfg}})),
            json!({}),
            "mock/beta",
            "operationConfig",
        ),
        (
            Some(json!({"model": "mock/echo"})),
            json!({}),
            "mock/echo",
            "conversation",
        ),
        (
            None,
            json!({"model": "plain2/alpha"}),
            "plain2/alpha",
            "request",
        ),
    ];
    for (change, body, model, from) in steps {
        if let Some(change) = change {
            let (status, answer) = if change.get("model").is_some() {
                server
                    .send("PUT", &format!("{path}/model"), Some(change))
                    .await
            } else {
                server.patch(&path, change).await
            };
            assert_eq!(status, 200, "{answer}");
        }
        let warmed = warm(&server, &conv, body.clone()).await;
        assert_eq!(warmed["model"], model, "{warmed}");
        assert_eq!(warmed["resolvedFrom"], from, "{warmed}");
        assert_eq!(warmed["deployment"], model, "{warmed}");
        let mut turn = body.clone();
        turn["content"] = json!("next question");
        let (started, ended) = server.run_turn(&conv, turn).await;
        assert_eq!(started["modelId"], model, "{started}");
        assert_eq!(started["resolvedFrom"], from, "{started}");
        assert_eq!(ended["status"], "completed", "{ended}");
    }
    // A warm's override is not persisted (the turn's was, for chat).
    let before = server.get_json(&format!("{path}/model")).await;
    warm(&server, &conv, json!({"model": "mock/alpha"})).await;
    assert_eq!(server.get_json(&format!("{path}/model")).await, before);
    // Bad input.
    let (status, problem) = server
        .post(&format!("{path}/warm"), json!({"model": "mock/nope-nope"}))
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "model_not_found");
    let (status, _) = server
        .post(&format!("{path}/warm"), json!({"operation": "Bad Op"}))
        .await;
    assert_eq!(status, 422);
    let (status, _) = server.post("/v1/conversations/nope/warm", json!({})).await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

/// The deployment that served the conversation's last answer.
async fn served_by(server: &TestServer, conv: &str) -> Value {
    server.messages(conv).await.last().unwrap()["modelId"].clone()
}

#[tokio::test]
async fn warm_on_a_route_prepares_the_deployment_the_next_turn_uses() {
    let server = server().await;
    // Round-robin moves on past the first target.
    let other = created(&server, "/v1/conversations", json!({})).await;
    server
        .run_turn(&other, json!({"content": "hi", "model": "pair"}))
        .await;
    assert_eq!(served_by(&server, &other).await, "mock/alpha");
    // No affinity yet: the route's first target that can serve, and the
    // next turn goes there too (round-robin alone would pick mock/beta).
    let fresh = created(&server, "/v1/conversations", json!({})).await;
    let warmed = warm(&server, &fresh, json!({"model": "pair"})).await;
    assert_eq!(warmed["model"], "pair", "{warmed}");
    assert_eq!(warmed["deployment"], "mock/alpha", "{warmed}");
    assert_eq!(warmed["action"], "none", "nothing to cache yet: {warmed}");
    server
        .run_turn(&fresh, json!({"content": "hi", "model": "pair"}))
        .await;
    assert_eq!(served_by(&server, &fresh).await, "mock/alpha");
    // A conversation whose affinity points at the second target: the warm
    // primes that one.
    let mut on_beta = None;
    for _ in 0..6 {
        let conv = created(&server, "/v1/conversations", json!({})).await;
        server
            .run_turn(&conv, json!({"content": "hi", "model": "pair"}))
            .await;
        if served_by(&server, &conv).await == "mock/beta" {
            on_beta = Some(conv);
            break;
        }
    }
    let conv = on_beta.expect("round-robin never picked mock/beta");
    let warmed = warm(&server, &conv, json!({})).await;
    assert_eq!(warmed["model"], "pair", "{warmed}");
    assert_eq!(warmed["resolvedFrom"], "conversation", "{warmed}");
    assert_eq!(warmed["deployment"], "mock/beta", "{warmed}");
    assert_eq!(warmed["action"], "prefix-cached", "{warmed}");
    let primer = chats(&server, true).pop().unwrap();
    assert_eq!(primer["model"], "beta", "{primer}");
    server.shutdown().await;
}

#[tokio::test]
async fn warm_primes_llama_cpp_with_the_next_turns_prefix_and_records_it() {
    let server = server().await;
    let cfg = created(
        &server,
        "/v1/llms",
        json!({"model": "mock/echo", "systemPrompt": "BE BRIEF",
               "providerOptions": {"temperature": 0.3, "maxTokens": 50}}),
    )
    .await;
    let conv = created(&server, "/v1/conversations", json!({"llmId": cfg})).await;
    // An empty conversation still has the system prompt to cache.
    server
        .run_turn(&conv, json!({"content": "first question"}))
        .await;
    server
        .run_turn(&conv, json!({"content": "second question"}))
        .await;
    let warmed = warm(&server, &conv, json!({})).await;
    assert_eq!(warmed["action"], "prefix-cached", "{warmed}");
    assert_eq!(warmed["deployment"], "mock/echo");
    assert!(warmed["durationMs"].is_u64(), "{warmed}");
    let primer = chats(&server, true).pop().unwrap();
    assert_eq!(primer["stream"], false, "{primer}");
    assert_eq!(primer["cache_prompt"], true, "{primer}");
    assert_eq!(primer["temperature"], 0.3, "{primer}");
    assert!(primer.get("stream_options").is_none(), "{primer}");

    server
        .run_turn(&conv, json!({"content": "third question"}))
        .await;
    let turn = chats(&server, false).pop().unwrap();
    let mut turn_messages = turn["messages"].as_array().unwrap().clone();
    let last = turn_messages.pop().unwrap();
    assert_eq!(last, json!({"role": "user", "content": "third question"}));
    // The primer is the next turn's request up to its new message.
    assert_eq!(primer["messages"], Value::Array(turn_messages), "{primer}");
    assert_eq!(primer["messages"][0]["content"], "BE BRIEF");
    assert_eq!(primer["messages"].as_array().unwrap().len(), 5);

    let call = session_call(&server, warmed["sessionId"].as_str().unwrap()).await;
    assert_eq!(call["operation"], "warm", "{call}");
    assert_eq!(call["conversationId"], conv.as_str());
    assert_eq!(call["turnId"], Value::Null);
    assert_eq!(call["modelId"], "mock/echo");
    assert_eq!(call["stream"], false);
    server.shutdown().await;
}

#[tokio::test]
async fn warm_action_follows_the_provider_kind() {
    let server = server().await;
    let conv = created(&server, "/v1/conversations", json!({})).await;
    // llama-swap: loads a model that is not loaded, then finds it loaded.
    let warmed = warm(&server, &conv, json!({"model": "swap/sw"})).await;
    assert_eq!(warmed["action"], "loaded", "{warmed}");
    assert_eq!(warmed["deployment"], "swap/sw");
    let swap = server.named("swap");
    assert!(swap.models().iter().any(|m| m.id == "sw" && m.loaded));
    assert!(swap
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path == "/upstream/sw/health"));
    let call = session_call(&server, warmed["sessionId"].as_str().unwrap()).await;
    assert_eq!(call["operation"], "warm", "{call}");
    assert_eq!(call["modelId"], "swap/sw");
    assert_eq!(call["conversationId"], conv.as_str());
    eventually(LIMIT, "the catalog says swap/sw is loaded", || async {
        let provider = server.get_json("/v1/providers/swap").await;
        let sw = provider["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["model"] == "sw" || m["id"] == "swap/sw")
            .cloned()
            .unwrap();
        if sw["loaded"] == true {
            Ok(())
        } else {
            Err(sw)
        }
    })
    .await;
    let warmed = warm(&server, &conv, json!({"model": "swap/sw"})).await;
    assert_eq!(warmed["action"], "already-loaded", "{warmed}");

    // Ollama: /api/generate without a prompt.
    let warmed = warm(&server, &conv, json!({"model": "ollama/llama3:latest"})).await;
    assert_eq!(warmed["action"], "loaded", "{warmed}");
    let ollama = server.named("ollama");
    let generate = ollama
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/generate")
        .unwrap();
    let body = generate.json().unwrap();
    assert_eq!(body["model"], "llama3:latest");
    assert!(body.get("prompt").is_none(), "{body}");
    assert!(ollama.models()[0].loaded);

    // Any other kind: nothing to do, nothing sent or recorded.
    let before = server.named("plain").requests().len();
    let warmed = warm(&server, &conv, json!({"model": "plain2/echo"})).await;
    assert_eq!(warmed["action"], "none", "{warmed}");
    assert_eq!(warmed["sessionId"], Value::Null);
    assert_eq!(server.named("plain").requests().len(), before);
    server.shutdown().await;
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

#[tokio::test]
async fn a_turn_on_an_unloaded_model_publishes_model_loading_until_its_first_token() {
    let server = server().await;
    let conv = created(&server, "/v1/conversations", json!({})).await;
    let mut events = server.events(&conv, None).await;
    events.replay().await;
    let started = server
        .start_turn(
            &conv,
            json!({"content": "hello", "model": "swap/slow-first:2500"}),
        )
        .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let seen = events.until(|e| ends_turn(e, &turn_id)).await;
    let loading: Vec<&Value> = seen
        .iter()
        .filter(|e| e.event == "model.loading")
        .map(|e| &e.data)
        .collect();
    assert!(loading.len() >= 2, "{seen:#?}");
    let elapsed: Vec<u64> = loading
        .iter()
        .map(|d| d["elapsedMs"].as_u64().unwrap())
        .collect();
    assert!(elapsed.windows(2).all(|w| w[0] < w[1]), "{elapsed:?}");
    assert!(elapsed[1] >= 900, "{elapsed:?}");
    for data in &loading {
        assert_eq!(data["turnId"], turn_id.as_str());
        assert_eq!(data["model"], "swap/slow-first:2500");
    }
    // None after the first token.
    let first_delta = seen.iter().position(|e| e.event == "text.delta").unwrap();
    let last_loading = seen
        .iter()
        .rposition(|e| e.event == "model.loading")
        .unwrap();
    assert!(last_loading < first_delta, "{seen:#?}");
    // Transient: not in the log.
    let log = common::conv::log(&server, &conv).await;
    assert!(log.iter().all(|e| e.event != "model.loading"));

    // A loaded model: no model.loading.
    let started = server
        .start_turn(&conv, json!({"content": "again", "model": "swap/up"}))
        .await;
    let turn_id = started["turnId"].as_str().unwrap().to_owned();
    let seen = events.until(|e| ends_turn(e, &turn_id)).await;
    assert!(seen.iter().all(|e| e.event != "model.loading"), "{seen:#?}");
    server.shutdown().await;
}
