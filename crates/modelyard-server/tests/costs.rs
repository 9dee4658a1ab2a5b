//! End-to-end tests of prices and costs (issue 21): `[[prices]]` and
//! discovered prices priced onto every call row, summed in sessions,
//! `/v1/usage` and conversations, and shown in the catalog; against the
//! in-process mock upstream.

#![allow(clippy::unwrap_used)]

mod common;

use common::conv::{create, messages, run_turn};
use common::{chat_body, TestServer};
use modelyard_core::cost::{call_cost_nusd, Price};
use modelyard_core::Usage;
use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

const LIMIT: std::time::Duration = std::time::Duration::from_secs(15);

/// `mock/*` at 2 / 0.5 / 10 USD per Mtok; the exact `mock/reasoning` entry
/// (which must win over the glob) adds a reasoning rate.
const PRICES: &str = r#"
[[prices]]
model = "mock/*"
input_per_mtok = 2.0
cached_input_per_mtok = 0.5
output_per_mtok = 10.0
currency = "USD"

[[prices]]
model = "mock/reasoning"
input_per_mtok = 3.0
output_per_mtok = 12.0
reasoning_per_mtok = 40.0

[[prices]]
model = "mock/reason*"
input_per_mtok = 99.0
output_per_mtok = 99.0
"#;

fn glob_price() -> Price {
    Price {
        input_per_mtok: 2.0,
        cached_input_per_mtok: Some(0.5),
        output_per_mtok: 10.0,
        reasoning_per_mtok: None,
    }
}

fn reasoning_price() -> Price {
    Price {
        input_per_mtok: 3.0,
        cached_input_per_mtok: None,
        output_per_mtok: 12.0,
        reasoning_per_mtok: Some(40.0),
    }
}

/// A call's usage as the core type.
fn usage_of(call: &Value) -> Usage {
    let n = |k: &str| call["usage"][k].as_u64();
    Usage {
        prompt_tokens: n("promptTokens"),
        completion_tokens: n("completionTokens"),
        reasoning_tokens: n("reasoningTokens"),
        cached_prompt_tokens: n("cachedPromptTokens"),
        cache_creation_tokens: n("cacheCreationTokens"),
        total_tokens: n("totalTokens"),
    }
}

/// `costUsd` as nano-USD (exact for the amounts here).
fn nusd(v: &Value) -> Option<i64> {
    v.as_f64().map(|usd| (usd * 1e9).round() as i64)
}

async fn priced_server() -> TestServer {
    TestServer::builder()
        .listed(&["mock-model", "reasoning", "local-free"])
        .extra(&format!(
            "[defaults]\nmodel = \"mock/mock-model\"\n[routing]\nretries = 0\n{PRICES}"
        ))
        .start()
        .await
}

async fn chat_ok(server: &TestServer, body: &Value) -> Value {
    let response = server.chat(body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    if body["stream"] == true {
        Value::String(text)
    } else {
        serde_json::from_str(&text).unwrap()
    }
}

#[tokio::test]
async fn priced_calls_carry_their_cost_streamed_or_not_and_sessions_and_usage_sum_it() {
    let server = priced_server().await;
    chat_ok(&server, &chat_body("mock/mock-model", false)).await;
    // Streamed without asking for usage: the gateway forces include_usage,
    // so the call is priced all the same.
    chat_ok(&server, &chat_body("mock/mock-model", true)).await;
    let mut streamed = chat_body("mock/reasoning", true);
    streamed["stream_options"] = json!({"include_usage": true});
    chat_ok(&server, &streamed).await;
    // An unlisted-but-unpriced model would be `none`; a model the glob
    // prices at 2/10 is `local-free`'s neighbour: priced too.
    chat_ok(&server, &chat_body("mock/local-free", false)).await;

    let calls = server.wait_calls(4).await;
    let mut total = 0i64;
    for call in &calls {
        let model = call["modelId"].as_str().unwrap();
        let price = if model == "mock/reasoning" {
            reasoning_price()
        } else {
            glob_price()
        };
        let usage = usage_of(call);
        assert!(usage.prompt_tokens.unwrap() > 0, "{call:#}");
        let want = call_cost_nusd(&usage, &price);
        assert!(want > 0, "{call:#}");
        assert_eq!(nusd(&call["costUsd"]), Some(want), "{model}: {call:#}");
        assert_eq!(call["priceSource"], "config", "{call:#}");
        let pattern = if model == "mock/reasoning" {
            "mock/reasoning"
        } else {
            "mock/*"
        };
        assert_eq!(
            call["priceVersion"],
            json!(price.version(pattern)),
            "the version names the entry that priced it: {call:#}"
        );
        total += want;
    }
    // The reasoning model's reasoning tokens are priced at their own rate.
    let reasoning = calls
        .iter()
        .find(|c| c["modelId"] == "mock/reasoning")
        .unwrap();
    assert!(reasoning["usage"]["reasoningTokens"].as_i64().unwrap() > 0);
    assert_eq!(reasoning["stream"], true);

    // Sessions sum their calls' costs; usage groups and totals too.
    let sessions = server.get_json("/v1/llm-sessions?limit=50").await;
    let session_sum: i64 = sessions["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| nusd(&s["costUsd"]).unwrap())
        .sum();
    assert_eq!(session_sum, total);
    for group in ["model", "provider", "operation", "day", "project", "key"] {
        let usage = server.get_json(&format!("/v1/usage?groupBy={group}")).await;
        assert_eq!(usage["groupBy"], group);
        let rows = usage["data"].as_array().unwrap();
        let sum: i64 = rows.iter().map(|r| nusd(&r["costUsd"]).unwrap()).sum();
        assert_eq!(sum, total, "groupBy={group}: {usage:#}");
        assert_eq!(nusd(&usage["total"]["costUsd"]), Some(total), "{usage:#}");
        assert_eq!(usage["total"]["unpricedCalls"], 0, "{usage:#}");
    }
    let by_key = server.get_json("/v1/usage?groupBy=key").await;
    assert_eq!(
        by_key["data"][0]["key"], "none",
        "no API keys here: {by_key:#}"
    );
    let by_project = server.get_json("/v1/usage?groupBy=project").await;
    assert_eq!(by_project["data"][0]["key"], "default", "{by_project:#}");
    server.shutdown().await;
}

#[tokio::test]
async fn an_unpriced_local_model_costs_zero_with_source_none() {
    // No [[prices]]: the mock is an `openai` provider on 127.0.0.1, a
    // local model.
    let server = TestServer::builder()
        .listed(&["mock-model"])
        .extra("[routing]\nretries = 0\n")
        .start()
        .await;
    chat_ok(&server, &chat_body("mock/mock-model", false)).await;
    let call = server.only_call().await;
    assert_eq!(call["costUsd"], json!(0.0), "{call:#}");
    assert_eq!(call["priceSource"], "none", "{call:#}");
    assert_eq!(call["priceVersion"], Value::Null, "{call:#}");
    let catalog = server.get_json("/v1/catalog").await;
    let model = &catalog["providers"][0]["models"][0];
    assert_eq!(model["price"]["source"], "none", "{model:#}");
    assert_eq!(model["price"]["free"], true, "{model:#}");
    assert_eq!(model["price"]["inputPerMtok"], Value::Null, "{model:#}");
    server.shutdown().await;
}

#[tokio::test]
async fn discovered_openrouter_prices_price_calls_unless_the_config_does() {
    let options = MockOptions::new(
        Flavour::OpenRouter,
        vec![
            MockModel::new("vendor/listed", Some(8_192)).with_pricing(&[
                ("prompt", "0.000001"),
                ("completion", "0.000004"),
                ("input_cache_read", "0.00000025"),
                ("internal_reasoning", "0"),
            ]),
            MockModel::new("vendor/overridden", Some(8_192))
                .with_pricing(&[("prompt", "0.000001"), ("completion", "0.000004")]),
            MockModel::new("vendor/unpriced", Some(8_192)),
        ],
    );
    let server = TestServer::builder()
        .mock("or", options)
        .providers(
            "[[providers]]\nname = \"or\"\nkind = \"openrouter\"\nbase_url = \"{mock:or}/api/v1\"\n",
        )
        .extra(
            "[routing]\nretries = 0\n\n[[prices]]\nmodel = \"or/vendor/overridden\"\n\
             input_per_mtok = 7.0\noutput_per_mtok = 8.0\n",
        )
        .start()
        .await;

    // The catalog shows each model's price and where it came from.
    let catalog = server.get_json("/v1/catalog").await;
    let models = catalog["providers"][0]["models"]
        .as_array()
        .unwrap()
        .clone();
    let price_of = |id: &str| {
        models
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("{id} in {models:#?}"))["price"]
            .clone()
    };
    let listed = price_of("or/vendor/listed");
    assert_eq!(listed["source"], "provider", "{listed}");
    assert_eq!(listed["inputPerMtok"], 1.0, "{listed}");
    assert_eq!(listed["outputPerMtok"], 4.0, "{listed}");
    assert_eq!(listed["cachedInputPerMtok"], 0.25, "{listed}");
    assert_eq!(listed["reasoningPerMtok"], Value::Null, "{listed}");
    let overridden = price_of("or/vendor/overridden");
    assert_eq!(overridden["source"], "config", "{overridden}");
    assert_eq!(overridden["inputPerMtok"], 7.0, "{overridden}");
    let unpriced = price_of("or/vendor/unpriced");
    assert_eq!(unpriced["source"], "none", "{unpriced}");
    assert_eq!(
        unpriced["free"], false,
        "a cloud model is not free: {unpriced}"
    );

    for model in [
        "or/vendor/listed",
        "or/vendor/overridden",
        "or/vendor/unpriced",
    ] {
        chat_ok(&server, &chat_body(model, false)).await;
    }
    let calls = server.wait_calls(3).await;
    let call = |id: &str| calls.iter().find(|c| c["modelId"] == id).unwrap().clone();
    let listed_call = call("or/vendor/listed");
    let listed_price = Price {
        input_per_mtok: 1.0,
        cached_input_per_mtok: Some(0.25),
        output_per_mtok: 4.0,
        reasoning_per_mtok: None,
    };
    assert_eq!(listed_call["priceSource"], "provider", "{listed_call:#}");
    assert_eq!(
        nusd(&listed_call["costUsd"]),
        Some(call_cost_nusd(&usage_of(&listed_call), &listed_price))
    );
    let overridden_call = call("or/vendor/overridden");
    assert_eq!(overridden_call["priceSource"], "config");
    let config_price = Price {
        input_per_mtok: 7.0,
        output_per_mtok: 8.0,
        ..Price::default()
    };
    assert_eq!(
        nusd(&overridden_call["costUsd"]),
        Some(call_cost_nusd(&usage_of(&overridden_call), &config_price))
    );
    // An unpriced cloud model: cost unknown (null), never a made-up 0,
    // and counted as unpriced in /v1/usage.
    let unpriced_call = call("or/vendor/unpriced");
    assert_eq!(unpriced_call["priceSource"], "none");
    assert_eq!(unpriced_call["costUsd"], Value::Null, "{unpriced_call:#}");
    let usage = server.get_json("/v1/usage?groupBy=model").await;
    let row = |key: &str| {
        usage["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(
        row("or/vendor/unpriced")["costUsd"],
        Value::Null,
        "{usage:#}"
    );
    assert_eq!(row("or/vendor/unpriced")["unpricedCalls"], 1, "{usage:#}");
    assert_eq!(usage["total"]["unpricedCalls"], 1, "{usage:#}");
    assert_eq!(
        nusd(&usage["total"]["costUsd"]),
        Some(nusd(&listed_call["costUsd"]).unwrap() + nusd(&overridden_call["costUsd"]).unwrap())
    );
    server.shutdown().await;
}

#[tokio::test]
async fn conversations_and_their_messages_show_what_their_calls_cost() {
    let server = priced_server().await;
    let conv = create(&server, json!({"title": "costs"})).await;
    run_turn(&server, &conv, json!({"content": "hello there"})).await;
    run_turn(&server, &conv, json!({"content": "and again"})).await;
    let assistant: Vec<Value> = messages(&server, &conv)
        .await
        .into_iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    assert_eq!(assistant.len(), 2);
    let mut sum = 0;
    for m in &assistant {
        let u = &m["usage"];
        let usage = Usage {
            prompt_tokens: u["promptTokens"].as_u64(),
            completion_tokens: u["completionTokens"].as_u64(),
            reasoning_tokens: u["reasoningTokens"].as_u64(),
            cached_prompt_tokens: u["cachedPromptTokens"].as_u64(),
            ..Usage::default()
        };
        let want = call_cost_nusd(&usage, &glob_price());
        assert!(want > 0, "{m:#}");
        assert_eq!(nusd(&m["costUsd"]), Some(want), "{m:#}");
        assert_eq!(u["costNusd"], want, "{m:#}");
        sum += want;
    }
    let conversation = server.get_json(&format!("/v1/conversations/{conv}")).await;
    assert_eq!(
        nusd(&conversation["costUsd"]),
        Some(sum),
        "{conversation:#}"
    );
    let turns = server
        .get_json(&format!("/v1/conversations/{conv}/turns"))
        .await;
    let turn_sum: i64 = turns["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| nusd(&t["costUsd"]).unwrap())
        .sum();
    assert_eq!(turn_sum, sum, "{turns:#}");
    // The call log agrees with the conversation (recorded off the hot path).
    let sessions = eventually(LIMIT, "the turns' sessions", || async {
        let page = server
            .get_json(&format!("/v1/llm-sessions?conversationId={conv}"))
            .await;
        let data = page["data"].as_array().unwrap().clone();
        if data.len() == 2 {
            Ok(data)
        } else {
            Err(data)
        }
    })
    .await;
    let logged: i64 = sessions.iter().map(|s| nusd(&s["costUsd"]).unwrap()).sum();
    assert_eq!(logged, sum);
    server.shutdown().await;
}
