//! End-to-end tests of LLM config versions and the config snapshot each LLM
//! session records (issue 16 §2): every PATCH of a config is a new version
//! and every version stays readable (`GET /v1/llms/{id}/versions`,
//! `?version=N`), also after a delete; a turn's, an operation's and a
//! gateway request's session keeps the config as it ran with
//! (`GET /v1/llm-sessions/{id}` → `config`); a server with only
//! `defaults.model` lists it as a `system-default` config; and
//! `GET /v1/usage?conversationId=…&groupBy=operation` splits one
//! conversation's usage by operation.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::eventually;
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

const LISTED: &[&str] = &["mock-model", "echo"];

async fn server_with(extra: &str) -> TestServer {
    TestServer::builder()
        .listed(LISTED)
        .extra(extra)
        .start()
        .await
}

async fn create_llm(server: &TestServer, body: Value) -> String {
    let (status, llm) = server.post("/v1/llms", body.clone()).await;
    assert_eq!(status, 201, "create {body}: {llm}");
    assert_eq!(llm["version"], 1, "{llm}");
    llm["id"].as_str().unwrap().to_owned()
}

async fn patch_llm(server: &TestServer, id: &str, body: Value) -> Value {
    let (status, llm) = server.patch(&format!("/v1/llms/{id}"), body.clone()).await;
    assert_eq!(status, 200, "patch {body}: {llm}");
    llm
}

/// The session `id` once the call log has written it.
async fn session(server: &TestServer, id: &str) -> Value {
    eventually(LIMIT, &format!("session {id} recorded"), || async move {
        let (status, body) = server
            .send("GET", &format!("/v1/llm-sessions/{id}"), None)
            .await;
        if status == 200 {
            Ok(body)
        } else {
            Err((status, body))
        }
    })
    .await
}

/// Runs a turn to its end; returns the turn id and the upstream request.
async fn turn(server: &TestServer, conv: &str, body: Value) -> (String, Value) {
    let (started, ended) = server.run_turn(conv, body).await;
    assert_eq!(ended["status"], "completed", "{ended}");
    let request = server.mock_chats().last().cloned().unwrap();
    (started["turnId"].as_str().unwrap().to_owned(), request)
}

// ------------------------------------------------------------------ versions

#[tokio::test]
async fn each_patch_is_a_new_version_and_every_version_reads_back() {
    let server = server_with("").await;
    let id = create_llm(
        &server,
        json!({"displayName": "one", "model": "mock/mock-model", "systemPrompt": "First.",
               "providerOptions": {"temperature": 0.1}}),
    )
    .await;
    let v2 = patch_llm(
        &server,
        &id,
        json!({"displayName": "two", "providerOptions": {"maxTokens": 7}}),
    )
    .await;
    assert_eq!(v2["version"], 2);
    let v3 = patch_llm(
        &server,
        &id,
        json!({"model": "mock/echo", "systemPrompt": null}),
    )
    .await;
    assert_eq!(v3["version"], 3);
    let current = server.get_ok(&format!("/v1/llms/{id}")).await;
    assert_eq!(current, v3, "the current answer is the last version");
    assert_eq!(current["deleted"], false);

    // Three versions, newest first, each the whole config as it was.
    let page = server.get_ok(&format!("/v1/llms/{id}/versions")).await;
    let versions = page["data"].as_array().unwrap();
    assert_eq!(versions.len(), 3, "{page}");
    assert_eq!(page["nextBefore"], Value::Null);
    let seen: Vec<(i64, &str, &str, Value, Value, Value)> = versions
        .iter()
        .map(|v| {
            let c = &v["config"];
            assert_eq!(v["version"], c["version"], "{v}");
            assert_eq!(c["id"], id.as_str());
            assert!(v["createdAtMs"].as_i64().unwrap() > 0, "{v}");
            assert_eq!(v["createdAt"], c["updatedAt"], "{v}");
            (
                v["version"].as_i64().unwrap(),
                c["displayName"].as_str().unwrap(),
                c["model"].as_str().unwrap(),
                c["systemPrompt"].clone(),
                c["providerOptions"]["temperature"].clone(),
                c["providerOptions"]["maxTokens"].clone(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            (3, "two", "mock/echo", Value::Null, json!(0.1), json!(7)),
            (
                2,
                "two",
                "mock/mock-model",
                json!("First."),
                json!(0.1),
                json!(7)
            ),
            (
                1,
                "one",
                "mock/mock-model",
                json!("First."),
                json!(0.1),
                Value::Null
            ),
        ]
    );
    let times: Vec<i64> = versions
        .iter()
        .map(|v| v["createdAtMs"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");

    // ?version=N: that version, as the list shows it.
    for v in versions {
        let n = v["version"].as_i64().unwrap();
        let one = server.get_ok(&format!("/v1/llms/{id}?version={n}")).await;
        assert_eq!(one, v["config"], "version {n}");
    }
    server
        .problem(
            "GET",
            &format!("/v1/llms/{id}?version=4"),
            None,
            404,
            "llm_config_version_not_found",
        )
        .await;
    server
        .problem(
            "GET",
            &format!("/v1/llms/{id}?version=0"),
            None,
            400,
            "invalid_query",
        )
        .await;

    // Pages.
    let page = server
        .get_ok(&format!("/v1/llms/{id}/versions?limit=2"))
        .await;
    let numbers: Vec<i64> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 2]);
    assert_eq!(page["nextBefore"], "2");
    let page = server
        .get_ok(&format!("/v1/llms/{id}/versions?limit=2&before=2"))
        .await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["version"], 1);

    // A refused PATCH makes no version.
    let (status, _) = server
        .patch(&format!("/v1/llms/{id}"), json!({"displayName": ""}))
        .await;
    assert_eq!(status, 422);
    let page = server.get_ok(&format!("/v1/llms/{id}/versions")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 3);
    // An unknown config has no versions.
    let nobody = "0198a0a0-0000-7000-8000-000000000001";
    server
        .problem(
            "GET",
            &format!("/v1/llms/{nobody}/versions"),
            None,
            404,
            "llm_config_not_found",
        )
        .await;
}

// ------------------------------------------------------------------ snapshots

#[tokio::test]
async fn a_turns_session_keeps_its_snapshot_after_an_edit_and_a_delete() {
    let server = server_with("").await;
    let cfg = create_llm(
        &server,
        json!({"model": "mock/mock-model", "systemPrompt": "OLD PROMPT",
               "providerOptions": {"temperature": 0.3, "extra": {"min_p": 0.2}}}),
    )
    .await;
    let conv = server.create_conversation(json!({"llmId": cfg})).await;
    let (first, request) = turn(&server, &conv, json!({"content": "hi"})).await;
    assert_eq!(request["messages"][0]["content"], "OLD PROMPT");

    // The turn's session (its id is the turn's) records the config as it was.
    let before_edit = session(&server, &first).await;
    let snapshot = before_edit["config"].clone();
    assert_eq!(snapshot["llmId"], cfg.as_str(), "{before_edit}");
    assert_eq!(snapshot["version"], 1);
    assert_eq!(snapshot["source"], "user");
    assert_eq!(snapshot["resolvedFrom"], "conversationConfig");
    assert_eq!(snapshot["model"], "mock/mock-model");
    assert_eq!(snapshot["systemPrompt"], "OLD PROMPT");
    assert_eq!(snapshot["providerOptions"]["temperature"], 0.3);
    assert_eq!(snapshot["providerOptions"]["extra"], json!({"min_p": 0.2}));
    assert_eq!(snapshot["providerOptions"]["maxTokens"], Value::Null);
    let base_url = snapshot["baseUrl"].as_str().unwrap();
    assert!(base_url.starts_with("http://127.0.0.1:"), "{snapshot}");
    assert!(!snapshot.to_string().contains("apiKey"), "{snapshot}");

    // Edited: the next turn runs with (and records) version 2; the first
    // turn's session still says version 1.
    patch_llm(
        &server,
        &cfg,
        json!({"systemPrompt": "NEW PROMPT", "providerOptions": {"temperature": 0.9}}),
    )
    .await;
    let (second, request) = turn(&server, &conv, json!({"content": "again"})).await;
    assert_eq!(request["messages"][0]["content"], "NEW PROMPT");
    let after_edit = session(&server, &second).await;
    assert_eq!(after_edit["config"]["version"], 2);
    assert_eq!(after_edit["config"]["systemPrompt"], "NEW PROMPT");
    assert_eq!(after_edit["config"]["providerOptions"]["temperature"], 0.9);
    assert_eq!(session(&server, &first).await["config"], snapshot);

    // A title run records its own snapshot (the conversation's config).
    let (status, titled) = server
        .post(&format!("/v1/conversations/{conv}/title"), json!({}))
        .await;
    assert_eq!(status, 200, "{titled}");
    let title = session(&server, titled["sessionId"].as_str().unwrap()).await;
    assert_eq!(title["operation"], "title");
    assert_eq!(title["config"]["llmId"], cfg.as_str(), "{title}");
    assert_eq!(title["config"]["version"], 2);

    // Deleted (once the conversation lets go): every snapshot stays, and
    // the version it names stays readable.
    let (status, _) = server
        .patch(&format!("/v1/conversations/{conv}"), json!({"llmId": null}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .send("DELETE", &format!("/v1/llms/{cfg}"), None)
        .await;
    assert_eq!(status, 204);
    server
        .problem(
            "GET",
            &format!("/v1/llms/{cfg}"),
            None,
            404,
            "llm_config_not_found",
        )
        .await;
    assert_eq!(session(&server, &first).await["config"], snapshot);
    let old = server.get_ok(&format!("/v1/llms/{cfg}?version=1")).await;
    assert_eq!(old["deleted"], true);
    assert_eq!(old["systemPrompt"], "OLD PROMPT");
    assert_eq!(old["providerOptions"]["temperature"], 0.3);
    let versions = server.get_ok(&format!("/v1/llms/{cfg}/versions")).await;
    assert_eq!(versions["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_gateway_call_with_a_config_runs_with_it_and_records_its_snapshot() {
    let server = server_with("").await;
    let cfg = create_llm(
        &server,
        json!({"model": "mock/mock-model", "systemPrompt": "GATEWAY PROMPT",
               "providerOptions": {"temperature": 0.4, "maxTokens": 33}}),
    )
    .await;
    // No model in the body: the config's; its prompt and options added.
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("x-modelyard-llm", cfg.as_str())
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "temperature": 1.0}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["model"], "mock/mock-model");
    let request = server.mock_chats().last().cloned().unwrap();
    assert_eq!(request["model"], "mock-model");
    assert_eq!(request["temperature"], 1.0, "the request's own value wins");
    assert_eq!(request["max_tokens"], 33);
    assert_eq!(
        request["messages"],
        json!([{"role": "system", "content": "GATEWAY PROMPT"},
               {"role": "user", "content": "hi"}])
    );

    let sessions = eventually(LIMIT, "the gateway session", || async {
        let page = server.get_ok("/v1/llm-sessions?operation=gateway").await;
        let data = page["data"].as_array().unwrap().clone();
        if data.is_empty() {
            Err(page)
        } else {
            Ok(data)
        }
    })
    .await;
    let config = &sessions[0]["config"];
    assert_eq!(config["llmId"], cfg.as_str(), "{}", sessions[0]);
    assert_eq!(config["version"], 1);
    assert_eq!(config["source"], "user");
    assert_eq!(config["resolvedFrom"], Value::Null);
    assert_eq!(config["model"], "mock/mock-model");
    assert_eq!(config["systemPrompt"], "GATEWAY PROMPT");
    assert_eq!(config["providerOptions"]["maxTokens"], 33);
    let detail = session(&server, sessions[0]["id"].as_str().unwrap()).await;
    assert_eq!(&detail["config"], config);

    // Without the header: no snapshot. An unknown config: 404, nothing sent.
    let response = server
        .chat(&json!({"model": "mock/mock-model", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(response.status(), 200);
    let sent = server.mock_chats().len();
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("x-modelyard-llm", "0198a0a0-0000-7000-8000-000000000001")
        .json(&json!({"messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "llm_config_not_found", "{error}");
    assert_eq!(server.mock_chats().len(), sent);
    let sessions = eventually(LIMIT, "two gateway sessions", || async {
        let page = server.get_ok("/v1/llm-sessions?operation=gateway").await;
        let data = page["data"].as_array().unwrap().clone();
        if data.len() >= 2 {
            Ok(data)
        } else {
            Err(page)
        }
    })
    .await;
    assert_eq!(sessions.len(), 2);
    assert!(sessions[0]["config"].is_null(), "{}", sessions[0]);
}

// ------------------------------------------------------------------ defaults.model

#[tokio::test]
async fn a_server_with_only_defaults_model_lists_it_as_a_system_default() {
    let server = server_with("[defaults]\nmodel = \"mock/mock-model\"\n").await;
    // Listed before any turn needed it.
    let listed = server.get_ok("/v1/llms").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{listed}");
    let default = &data[0];
    assert_eq!(default["source"], "system-default");
    assert_eq!(default["model"], "mock/mock-model");
    assert_eq!(default["presetName"], "defaults.model");
    assert_eq!(default["presetVersion"], 1);
    assert_eq!(default["systemPrompt"], Value::Null);
    let id = default["id"].as_str().unwrap().to_owned();

    // A conversation without llmId resolves through it, and its session
    // records it.
    let conv = server.create_conversation(json!({})).await;
    let (started, ended) = server.run_turn(&conv, json!({"content": "hi"})).await;
    assert_eq!(ended["resolvedFrom"], "serverDefault");
    assert_eq!(ended["llmId"], id.as_str());
    let turn_session = session(&server, started["turnId"].as_str().unwrap()).await;
    assert_eq!(turn_session["config"]["llmId"], id.as_str());
    assert_eq!(turn_session["config"]["source"], "system-default");
    assert_eq!(turn_session["config"]["resolvedFrom"], "serverDefault");

    // Listing again materializes nothing more; it is read-only.
    let again = server.get_ok("/v1/llms").await;
    assert_eq!(again["data"].as_array().unwrap().len(), 1, "{again}");
    server
        .problem(
            "PATCH",
            &format!("/v1/llms/{id}"),
            Some(json!({"displayName": "mine"})),
            409,
            "read_only",
        )
        .await;
}

#[tokio::test]
async fn a_changed_defaults_model_is_a_new_version_of_its_system_default() {
    let dir = common::TempDir::new();
    let first = TestServer::builder()
        .listed(LISTED)
        .extra("[defaults]\nmodel = \"mock/mock-model\"\n")
        .dir(dir)
        .start()
        .await;
    let v1 = first.get_ok("/v1/llms").await["data"][0].clone();
    assert_eq!(v1["presetVersion"], 1);
    let dir = first.shutdown().await;
    let second = TestServer::builder()
        .listed(LISTED)
        .extra("[defaults]\nmodel = \"mock/echo\"\n")
        .dir(dir)
        .start()
        .await;
    let listed = second.get_ok("/v1/llms").await;
    let data = listed["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{listed}");
    assert_eq!(data[0]["presetVersion"], 2, "newest first: {listed}");
    assert_eq!(data[0]["model"], "mock/echo");
    assert_eq!(data[1]["id"], v1["id"], "the old one stays");
}

// ------------------------------------------------------------------ usage

#[tokio::test]
async fn usage_of_one_conversation_splits_by_operation() {
    let server = server_with("[defaults]\nmodel = \"mock/mock-model\"\n").await;
    let conv = server.create_conversation(json!({})).await;
    let other = server.create_conversation(json!({})).await;
    turn(&server, &conv, json!({"content": "one"})).await;
    turn(&server, &conv, json!({"content": "two"})).await;
    turn(&server, &other, json!({"content": "elsewhere"})).await;
    let (status, titled) = server
        .post(&format!("/v1/conversations/{conv}/title"), json!({}))
        .await;
    assert_eq!(status, 200, "{titled}");
    session(&server, titled["sessionId"].as_str().unwrap()).await;

    let path = format!("/v1/usage?conversationId={conv}&groupBy=operation");
    let usage = eventually(LIMIT, "three sessions counted", || async {
        let usage = server.get_ok(&path).await;
        if usage["total"]["calls"] == 3 {
            Ok(usage)
        } else {
            Err(usage)
        }
    })
    .await;
    assert_eq!(usage["groupBy"], "operation");
    assert_eq!(usage["conversationId"], conv.as_str());
    let groups: Vec<(&str, i64)> = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["key"].as_str().unwrap(), g["calls"].as_i64().unwrap()))
        .collect();
    assert_eq!(groups, [("chat", 2), ("title", 1)], "{usage}");
    let sum: i64 = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["totalTokens"].as_i64().unwrap())
        .sum();
    assert_eq!(usage["total"]["totalTokens"], sum);
    assert!(sum > 0, "{usage}");

    // The whole project counts the other conversation too; a bad id is 400.
    let all = server.get_ok("/v1/usage?groupBy=operation").await;
    assert_eq!(all["total"]["calls"], 4, "{all}");
    assert_eq!(all["conversationId"], Value::Null);
    let (status, problem) = server
        .send("GET", "/v1/usage?conversationId=nope", None)
        .await;
    assert_eq!(status, 400, "{problem}");
}
