//! `GET /openapi.json`: the document generated from the handlers covers
//! every row of the route table (and nothing else), says which rows need a
//! key, describes each surface's error shape, and is served without a key.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::TestServer;
use modelyard_server::http::openapi::{document, openapi_path, operation_mut, SECURITY_SCHEME};
use modelyard_server::http::routes::{table, Access};
use serde_json::Value;

/// `(METHOD, path)` of every operation in a served document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_of_the_table_is_documented_and_nothing_else() {
    let doc = serde_json::to_value(document()).unwrap();
    let documented = operations(&doc);
    let routes: BTreeSet<(String, String)> = table()
        .iter()
        .map(|row| (row.method.to_string(), openapi_path(row.path)))
        .collect();
    let missing: Vec<_> = routes.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&routes).collect();
    assert!(
        missing.is_empty(),
        "routes missing from /openapi.json: {missing:?}"
    );
    assert!(stale.is_empty(), "documented but not routed: {stale:?}");
}

#[test]
fn keyed_routes_require_the_bearer_scheme_and_public_ones_do_not() {
    let doc = document().clone();
    let scheme = serde_json::to_value(&doc.components.as_ref().unwrap().security_schemes).unwrap();
    assert_eq!(scheme[SECURITY_SCHEME]["type"], "http");
    assert_eq!(scheme[SECURITY_SCHEME]["scheme"], "bearer");
    let mut doc = doc;
    for row in table() {
        let item = doc.paths.paths.get_mut(&openapi_path(row.path)).unwrap();
        let op = operation_mut(item, &row.method).unwrap();
        let security = serde_json::to_value(&op.security).unwrap();
        match row.access {
            Access::Public => assert!(security.is_null(), "{} {}", row.method, row.path),
            Access::Role(_) => assert!(
                security[0].get(SECURITY_SCHEME).is_some(),
                "{} {}: {security}",
                row.method,
                row.path
            ),
        }
    }
}

#[test]
fn each_surface_documents_its_own_error_shape() {
    let doc = serde_json::to_value(document()).unwrap();
    let default = |method: &str, path: &str| {
        doc["paths"][path][method]["responses"]["default"]["content"].clone()
    };
    let problem = default("get", "/v1/conversations/{id}");
    assert_eq!(
        problem["application/problem+json"]["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    let openai = default("post", "/v1/chat/completions");
    assert_eq!(
        openai["application/json"]["schema"]["$ref"],
        "#/components/schemas/OpenAiError"
    );
    let anthropic = default("post", "/v1/messages");
    assert_eq!(
        anthropic["application/json"]["schema"]["$ref"],
        "#/components/schemas/AnthropicError"
    );
    let schemas = &doc["components"]["schemas"];
    assert!(schemas["Problem"]["required"]
        .as_array()
        .unwrap()
        .contains(&"code".into()));
    // Every operation has an error answer.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["responses"]["default"].is_object(),
                "{method} {path} has no error answer"
            );
        }
    }
}

#[tokio::test]
async fn the_document_is_served_without_a_key_once_keys_are_required() {
    let server = TestServer::start().await;
    let (status, _) = server
        .post("/v1/keys", serde_json::json!({"role": "admin"}))
        .await;
    assert_eq!(status, 201);
    // Keys are now required: the catalog refuses an anonymous caller...
    let catalog = server
        .http
        .get(server.url("/v1/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(catalog.status(), 401);
    // ...while the document is public and is the one generated.
    let response = server
        .http
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert!(served["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(served, serde_json::to_value(document()).unwrap());
    // An error answer carries every member its documented shape requires.
    let (status, problem) = server
        .post("/v1/keys", serde_json::json!({"role": "admin"}))
        .await;
    assert_eq!(status, 401, "keys are required now: {problem}");
    for member in served["components"]["schemas"]["Problem"]["required"]
        .as_array()
        .unwrap()
    {
        let member = member.as_str().unwrap();
        assert!(problem.get(member).is_some(), "{member} missing: {problem}");
    }
}

#[test]
fn catalog_and_provider_answers_are_described_by_their_schemas() {
    let doc = serde_json::to_value(document()).unwrap();
    let schema_of = |method: &str, path: &str| {
        doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no schema"))
            .trim_start_matches("#/components/schemas/")
            .to_owned()
    };
    assert_eq!(schema_of("get", "/v1/catalog"), "CatalogDto");
    assert_eq!(schema_of("get", "/v1/providers"), "List_ProviderDto");
    assert_eq!(
        schema_of("get", "/v1/providers/{name}"),
        "ProviderDetailDto"
    );
    assert_eq!(
        schema_of("post", "/v1/providers/{name}/refresh"),
        "ProviderDetailDto"
    );
    assert_eq!(
        schema_of("post", "/v1/providers/{name}/models/{model}/load"),
        "ControlledDto"
    );
    let schemas = &doc["components"]["schemas"];
    let model = &schemas["ModelDto"]["properties"];
    for member in ["id", "contextWindow", "loaded", "price", "type"] {
        assert!(model.get(member).is_some(), "ModelDto lacks {member}");
    }
    assert!(schemas["RouteDto"]["properties"]["targets"].is_object());
    assert!(schemas["ProviderDto"]["properties"]["coolingDown"].is_object());
}

#[test]
fn a_conversation_names_the_arena_run_that_waits_for_a_pick() {
    let doc = serde_json::to_value(document()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let conversation = &schemas["ConversationDto"]["properties"];
    let status = conversation["status"]["description"].as_str().unwrap();
    assert!(status.contains("awaiting_pick"), "{status}");
    let pending = serde_json::to_string(&conversation["pendingArena"]).unwrap();
    assert!(
        pending.contains("#/components/schemas/PendingArenaDto"),
        "{pending}"
    );
    let run = &schemas["PendingArenaDto"]["properties"];
    assert!(
        run["runId"].is_object() && run["turnId"].is_object(),
        "{run}"
    );
}
