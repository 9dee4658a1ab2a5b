//! Projects, API keys and roles: a table-driven matrix over every route —
//! {no key, read, member, admin} × {own project, other project} — plus the
//! key life cycle (shown once, stored hashed, revoked → 401).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::TestServer;
use modelyard_store::{ProjectId, Role, Store};
use modelyard_testkit::eventually;
use serde_json::{json, Value};
use tokio::time::Instant;

/// Every route with the role it needs and whether it reads or changes a
/// project's own resource (then another project's key gets 404) — written
/// independently of the server's route table, and compared with them.
const MATRIX: &[(&str, &str, Role, bool)] = &[
    ("POST", "/v1/chat/completions", Role::Member, false),
    ("POST", "/v1/arena", Role::Member, false),
    ("POST", "/v1/arena/{run_id}/pick", Role::Member, true),
    ("GET", "/v1/arena/stats", Role::Read, false),
    ("GET", "/v1/models", Role::Read, false),
    ("POST", "/v1/embeddings", Role::Member, false),
    ("POST", "/v1/rerank", Role::Member, false),
    ("POST", "/v1/reranking", Role::Member, false),
    ("POST", "/v1/completions", Role::Member, false),
    // Server-wide Prometheus metrics.
    ("GET", "/metrics", Role::Admin, false),
    ("POST", "/v1/messages", Role::Member, false),
    // Unsupported: answered 404 `not_found_error` to whoever may call it.
    ("POST", "/v1/messages/count_tokens", Role::Member, false),
    ("POST", "/v1/responses", Role::Member, false),
    // A stored response is a turn of the project's conversation.
    ("GET", "/v1/responses/{id}", Role::Read, true),
    ("GET", "/v1/calls", Role::Read, false),
    ("GET", "/v1/calls/{id}", Role::Read, true),
    ("GET", "/v1/llm-calls/{id}", Role::Read, true),
    ("GET", "/v1/llm-sessions", Role::Read, false),
    ("GET", "/v1/llm-sessions/{id}", Role::Read, true),
    ("GET", "/v1/usage", Role::Read, false),
    ("GET", "/v1/catalog", Role::Read, false),
    ("GET", "/v1/providers", Role::Read, false),
    ("GET", "/v1/providers/{name}", Role::Read, false),
    ("POST", "/v1/providers/{name}/refresh", Role::Member, false),
    (
        "POST",
        "/v1/providers/{name}/models/{model}/load",
        Role::Admin,
        false,
    ),
    (
        "POST",
        "/v1/providers/{name}/models/{model}/unload",
        Role::Admin,
        false,
    ),
    ("GET", "/v1/favorites", Role::Read, false),
    ("PUT", "/v1/favorites", Role::Member, false),
    ("POST", "/v1/favorites", Role::Member, false),
    // Favorites are per project: B removing "mock/echo" touches only its own list.
    ("DELETE", "/v1/favorites/{*model_id}", Role::Member, false),
    ("GET", "/v1/llms", Role::Read, false),
    ("POST", "/v1/llms", Role::Admin, false),
    ("GET", "/v1/llms/{id}", Role::Read, true),
    ("PATCH", "/v1/llms/{id}", Role::Admin, true),
    ("DELETE", "/v1/llms/{id}", Role::Admin, true),
    ("POST", "/v1/llms/{id}/copy", Role::Admin, true),
    ("GET", "/v1/llms/{id}/versions", Role::Read, true),
    ("GET", "/v1/keys", Role::Admin, false),
    ("POST", "/v1/keys", Role::Admin, false),
    ("PATCH", "/v1/keys/{id}", Role::Admin, true),
    ("DELETE", "/v1/keys/{id}", Role::Admin, true),
    // A project's limits: another project's id is 404.
    ("GET", "/v1/projects/{id}/limits", Role::Admin, true),
    ("PUT", "/v1/projects/{id}/limits", Role::Admin, true),
    ("GET", "/v1/conversations", Role::Read, false),
    ("POST", "/v1/conversations", Role::Member, false),
    ("GET", "/v1/conversations/{id}", Role::Read, true),
    ("PATCH", "/v1/conversations/{id}", Role::Member, true),
    ("DELETE", "/v1/conversations/{id}", Role::Member, true),
    ("GET", "/v1/conversations/{id}/messages", Role::Read, true),
    (
        "POST",
        "/v1/conversations/{id}/messages",
        Role::Member,
        true,
    ),
    ("GET", "/v1/conversations/{id}/model", Role::Read, true),
    ("PUT", "/v1/conversations/{id}/model", Role::Member, true),
    ("GET", "/v1/conversations/{id}/settings", Role::Read, true),
    (
        "PATCH",
        "/v1/conversations/{id}/settings",
        Role::Member,
        true,
    ),
    (
        "GET",
        "/v1/conversations/{id}/model-history",
        Role::Read,
        true,
    ),
    ("GET", "/v1/conversations/{id}/turns", Role::Read, true),
    ("POST", "/v1/conversations/{id}/turns", Role::Member, true),
    (
        "POST",
        "/v1/conversations/{id}/turns/{turn_id}/cancel",
        Role::Member,
        true,
    ),
    (
        "POST",
        "/v1/conversations/{id}/turns/{turn_id}/tool-results",
        Role::Member,
        true,
    ),
    ("GET", "/v1/conversations/{id}/events", Role::Read, true),
    ("POST", "/v1/conversations/{id}/title", Role::Member, true),
    ("POST", "/v1/conversations/{id}/compact", Role::Member, true),
    ("POST", "/v1/conversations/{id}/warm", Role::Member, true),
    ("POST", "/v1/conversations/{id}/arena", Role::Member, true),
    (
        "GET",
        "/v1/conversations/{id}/arena/{run_id}",
        Role::Read,
        true,
    ),
    (
        "POST",
        "/v1/conversations/{id}/arena/{run_id}/pick",
        Role::Member,
        true,
    ),
];

#[test]
fn the_matrix_covers_every_route_and_agrees_with_the_server() {
    let ours: BTreeSet<(&str, &str, Role)> =
        MATRIX.iter().map(|(m, p, r, _)| (*m, *p, *r)).collect();
    let server: BTreeSet<(&str, &str, Role)> = modelyard_server::http::routes::access_rules()
        .into_iter()
        .collect();
    let missing: Vec<_> = server.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&server).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes without a matrix entry: {missing:?}; entries without a route: {extra:?}"
    );
}

struct Keys {
    read: String,
    member: String,
    admin: String,
    other_admin: String,
    other_member: String,
    other_read: String,
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.http.request(method, server.url(path));
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("send");
    let status = response.status().as_u16();
    // An SSE answer would never end: read only a little of it.
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let text = if is_sse {
        String::new()
    } else {
        response.text().await.unwrap_or_default()
    };
    (status, text)
}

async fn json_ok(server: &TestServer, method: &str, path: &str, key: &str, body: Value) -> Value {
    let (status, text) = call(server, method, path, Some(key), Some(body)).await;
    assert!(
        (200..300).contains(&status),
        "{method} {path} → {status}: {text}"
    );
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Project A's resources, made with A's admin key.
struct Fixture {
    conv: String,
    turn: String,
    llm: String,
    session: String,
    call: String,
}

async fn fixture(server: &TestServer, admin: &str) -> Fixture {
    let conv = json_ok(
        server,
        "POST",
        "/v1/conversations",
        admin,
        json!({"title": "A's secret plans"}),
    )
    .await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    let turn = json_ok(
        server,
        "POST",
        &format!("/v1/conversations/{conv}/turns"),
        admin,
        json!({"content": "hello", "model": "mock/echo"}),
    )
    .await;
    let turn = turn["turnId"].as_str().unwrap().to_owned();
    let llm = json_ok(
        server,
        "POST",
        "/v1/llms",
        admin,
        json!({"model": "mock/echo"}),
    )
    .await;
    let llm = llm["id"].as_str().unwrap().to_owned();
    json_ok(
        server,
        "PUT",
        "/v1/favorites",
        admin,
        json!({"favorites": ["mock/echo"]}),
    )
    .await;
    // Wait for the turn to end and its session to be recorded.
    let (session, call_id) = eventually(
        Duration::from_secs(10),
        "a session and its call recorded",
        || async move {
            let (_, text) = call(server, "GET", "/v1/llm-sessions", Some(admin), None).await;
            let page: Value = serde_json::from_str(&text).unwrap();
            let s = page["data"]
                .as_array()
                .and_then(|d| d.first())
                .ok_or(page.clone())?;
            let (_, text) = call(server, "GET", "/v1/calls", Some(admin), None).await;
            let calls: Value = serde_json::from_str(&text).unwrap();
            let c = calls["data"]
                .as_array()
                .and_then(|d| d.first())
                .ok_or(calls.clone())?;
            Ok::<_, Value>((
                s["id"].as_str().unwrap().to_owned(),
                c["id"].as_str().unwrap().to_owned(),
            ))
        },
    )
    .await;
    Fixture {
        conv,
        turn,
        llm,
        session,
        call: call_id,
    }
}

fn role_name(role: Role) -> &'static str {
    role.as_str()
}

/// A fresh resource for a destructive route, so every attempt has one.
async fn target_path(
    server: &TestServer,
    admin: &str,
    template: &str,
    method: &str,
    f: &Fixture,
) -> String {
    let mut path = template.to_owned();
    if method == "DELETE" && template == "/v1/conversations/{id}" {
        let c = json_ok(server, "POST", "/v1/conversations", admin, json!({})).await;
        return format!("/v1/conversations/{}", c["id"].as_str().unwrap());
    }
    if method == "DELETE" && template == "/v1/llms/{id}" {
        let l = json_ok(
            server,
            "POST",
            "/v1/llms",
            admin,
            json!({"model": "mock/echo"}),
        )
        .await;
        return format!("/v1/llms/{}", l["id"].as_str().unwrap());
    }
    if method == "PATCH" && template == "/v1/keys/{id}" {
        let k = json_ok(server, "POST", "/v1/keys", admin, json!({"role": "read"})).await;
        return format!("/v1/keys/{}", k["id"].as_str().unwrap());
    }
    // Arena runs: a fresh one (and for a conversation's, a fresh
    // conversation) per attempt, so a pending pick never holds the
    // fixture's conversation and every pick has a run to pick from.
    if template == "/v1/arena/{run_id}/pick" {
        let run = json_ok(
            server,
            "POST",
            "/v1/arena",
            admin,
            body_for("POST", "/v1/arena").unwrap(),
        )
        .await;
        return format!("/v1/arena/{}/pick", run["id"].as_str().unwrap());
    }
    if template.starts_with("/v1/conversations/{id}/arena") {
        let c = json_ok(server, "POST", "/v1/conversations", admin, json!({})).await;
        let conv = c["id"].as_str().unwrap();
        if template == "/v1/conversations/{id}/arena" {
            return format!("/v1/conversations/{conv}/arena");
        }
        let run = json_ok(
            server,
            "POST",
            &format!("/v1/conversations/{conv}/arena"),
            admin,
            body_for("POST", "/v1/conversations/{id}/arena").unwrap(),
        )
        .await;
        return template
            .replace("{id}", conv)
            .replace("{run_id}", run["runId"].as_str().unwrap());
    }
    if template == "/v1/projects/{id}/limits" {
        return "/v1/projects/default/limits".to_owned();
    }
    if method == "DELETE" && template == "/v1/keys/{id}" {
        let k = json_ok(server, "POST", "/v1/keys", admin, json!({"role": "read"})).await;
        return format!("/v1/keys/{}", k["id"].as_str().unwrap());
    }
    if template == "/v1/favorites/{*model_id}" {
        json_ok(
            server,
            "PUT",
            "/v1/favorites",
            admin,
            json!({"favorites": ["mock/echo"]}),
        )
        .await;
        return "/v1/favorites/mock/echo".to_owned();
    }
    let response = format!("resp_{}", f.turn);
    let id = if template.starts_with("/v1/conversations/") {
        f.conv.as_str()
    } else if template.starts_with("/v1/responses/") {
        response.as_str()
    } else if template.starts_with("/v1/llms/") {
        f.llm.as_str()
    } else if template.starts_with("/v1/llm-sessions/") {
        f.session.as_str()
    } else if template.starts_with("/v1/calls/") || template.starts_with("/v1/llm-calls/") {
        f.call.as_str()
    } else {
        ""
    };
    path = path
        .replace("{id}", id)
        .replace("{turn_id}", &f.turn)
        .replace("{name}", "mock")
        .replace("{model}", "echo");
    path
}

fn body_for(method: &str, template: &str) -> Option<Value> {
    let body = match (method, template) {
        ("POST", "/v1/chat/completions") => {
            json!({"model": "mock/echo", "messages": [{"role": "user", "content": "hi"}]})
        }
        ("POST", "/v1/arena") => {
            json!({"models": ["mock/echo", "mock/mock-model"], "prompt": "hi"})
        }
        ("POST", "/v1/conversations/{id}/arena") => {
            json!({"models": ["mock/echo", "mock/mock-model"], "content": "hi"})
        }
        ("POST", "/v1/arena/{run_id}/pick")
        | ("POST", "/v1/conversations/{id}/arena/{run_id}/pick") => {
            json!({"model": "mock/echo"})
        }
        ("POST", "/v1/embeddings") => json!({"model": "mock/echo", "input": "hi"}),
        ("POST", "/v1/rerank") | ("POST", "/v1/reranking") => {
            json!({"model": "mock/echo", "query": "hi", "documents": ["hi"]})
        }
        ("POST", "/v1/completions") => json!({"model": "mock/echo", "prompt": "hi"}),
        ("POST", "/v1/responses") => json!({"model": "mock/echo", "input": "hi", "store": false}),
        ("POST", "/v1/messages") | ("POST", "/v1/messages/count_tokens") => json!({
            "model": "mock/echo", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}],
        }),
        ("PUT", "/v1/favorites") => json!({"favorites": ["mock/echo"]}),
        ("POST", "/v1/favorites") => json!({"modelId": "mock/echo"}),
        ("POST", "/v1/llms") => json!({"model": "mock/echo"}),
        ("PATCH", "/v1/llms/{id}") => json!({"displayName": "renamed"}),
        ("POST", "/v1/keys") => json!({"role": "read"}),
        ("PATCH", "/v1/keys/{id}") => json!({"limits": {"maxConcurrent": 100}}),
        ("PUT", "/v1/projects/{id}/limits") => json!({}),
        ("POST", "/v1/conversations") => json!({}),
        ("PATCH", "/v1/conversations/{id}") => json!({"title": "t"}),
        ("POST", "/v1/conversations/{id}/messages") => {
            json!({"messages": [{"role": "user", "content": "imported"}]})
        }
        ("PUT", "/v1/conversations/{id}/model") => json!({"model": "mock/echo"}),
        ("PATCH", "/v1/conversations/{id}/settings") => json!({"cwd": "/tmp"}),
        ("POST", "/v1/conversations/{id}/turns") => {
            json!({"content": "again", "model": "mock/echo"})
        }
        ("POST", "/v1/conversations/{id}/turns/{turn_id}/tool-results") => json!({"results": []}),
        ("POST", "/v1/conversations/{id}/title") | ("POST", "/v1/conversations/{id}/compact") => {
            json!({"model": "mock/echo"})
        }
        (_, _) if method == "GET" || method == "DELETE" => return None,
        _ => json!({}),
    };
    Some(body)
}

#[tokio::test]
async fn every_route_answers_by_role_and_project() {
    let server = TestServer::builder()
        .listed(&["echo", "mock-model"])
        .start()
        .await;
    // Open mode (no key yet, loopback): any key an SDK sends is ignored.
    let (status, _) = call(&server, "GET", "/v1/models", Some("sk-anything"), None).await;
    assert_eq!(status, 200, "open mode ignores keys");
    // The first admin key over the API.
    let first = json_ok(
        &server,
        "POST",
        "/v1/keys",
        "",
        json!({"role": "admin", "name": "first"}),
    )
    .await;
    let admin = first["key"].as_str().unwrap().to_owned();
    assert!(admin.starts_with("mk_"));
    assert_eq!(first["prefix"], admin[..11]);
    let make = |role: &'static str| {
        let admin = admin.clone();
        let server = &server;
        async move {
            json_ok(server, "POST", "/v1/keys", &admin, json!({"role": role})).await["key"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let read = make("read").await;
    let member = make("member").await;
    // Project B's keys, made offline like `modelyard keys create --project b`.
    let store = Store::connect(&server.db_url()).await.unwrap();
    let b: ProjectId = store.create_project("b").await.unwrap();
    let mut other = Vec::new();
    for role in [Role::Admin, Role::Member, Role::Read] {
        let (_, secret) =
            modelyard_server::service::keys::create(&store, &b, Some("b key".into()), role)
                .await
                .map(|k| (k.row, k.secret))
                .unwrap();
        other.push(secret);
    }
    let keys = Keys {
        read,
        member,
        admin: admin.clone(),
        other_admin: other[0].clone(),
        other_member: other[1].clone(),
        other_read: other[2].clone(),
    };
    // The key is stored hashed: the secret is nowhere in the database file.
    let db = std::fs::read(server.db_url().trim_start_matches("sqlite://")).unwrap();
    let haystack = String::from_utf8_lossy(&db);
    assert!(!haystack.contains(&admin[3..]), "the secret is not stored");

    let f = fixture(&server, &admin).await;
    let mut failures = Vec::new();
    for (method, template, needed, scoped) in MATRIX {
        for (project, callers) in [
            (
                "own",
                [
                    (None, None),
                    (Some(Role::Read), Some(&keys.read)),
                    (Some(Role::Member), Some(&keys.member)),
                    (Some(Role::Admin), Some(&keys.admin)),
                ],
            ),
            (
                "other",
                [
                    (None, None),
                    (Some(Role::Read), Some(&keys.other_read)),
                    (Some(Role::Member), Some(&keys.other_member)),
                    (Some(Role::Admin), Some(&keys.other_admin)),
                ],
            ),
        ] {
            for (role, key) in callers {
                let path = target_path(&server, &admin, template, method, &f).await;
                let (status, text) = call(
                    &server,
                    method,
                    &path,
                    key.map(String::as_str),
                    body_for(method, template),
                )
                .await;
                let expected: &str = match role {
                    None => "401",
                    Some(r) if r < *needed => "403",
                    Some(_) if project == "other" && *scoped => "404",
                    Some(_) => "allowed",
                };
                let ok = match expected {
                    "401" => status == 401,
                    "403" => status == 403,
                    "404" => status == 404,
                    // Removing a model the caller's project has not pinned is a 404.
                    _ if *template == "/v1/favorites/{*model_id}" => [204, 404].contains(&status),
                    _ if *template == "/v1/messages/count_tokens" => status == 404,
                    _ => ![401, 403, 404].contains(&status) && status < 500,
                };
                if !ok {
                    failures.push(format!(
                        "{method} {template} as {} of the {project} project: expected {expected}, got {status}: {}",
                        role.map_or("no key", role_name),
                        text.chars().take(200).collect::<String>()
                    ));
                }
                // Another project never sees A's data in a listing.
                if project == "other" && status == 200 {
                    for secret in [
                        f.conv.as_str(),
                        f.llm.as_str(),
                        f.session.as_str(),
                        "A's secret plans",
                    ] {
                        if text.contains(secret) {
                            failures.push(format!(
                                "{method} {template} leaks {secret} to another project"
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Project A's data is intact after B's attempts.
    let (status, text) = call(
        &server,
        "GET",
        &format!("/v1/conversations/{}", f.conv),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let (_, favorites) = call(&server, "GET", "/v1/favorites", Some(&admin), None).await;
    assert!(favorites.contains("mock/echo"), "{favorites}");

    // Two keys of one project share its favorites; the other project's differ.
    let (status, _) = call(
        &server,
        "PUT",
        "/v1/favorites",
        Some(&keys.member),
        Some(json!({"favorites": ["mock/mock-model", "mock/echo"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, seen_by_read) = call(&server, "GET", "/v1/favorites", Some(&keys.read), None).await;
    let seen: Value = serde_json::from_str(&seen_by_read).unwrap();
    let ids: Vec<&str> = seen["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["modelId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["mock/mock-model", "mock/echo"], "{seen}");
    let (_, seen_by_b) = call(
        &server,
        "GET",
        "/v1/favorites",
        Some(&keys.other_read),
        None,
    )
    .await;
    assert!(!seen_by_b.contains("mock/mock-model"), "{seen_by_b}");

    // Errors: problem+json on our API, the OpenAI envelope on OpenAI routes.
    let response = server
        .http
        .get(server.url("/v1/catalog"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth("mk_not-a-key")
        .json(&json!({"model": "mock/echo", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");
    // /health needs no key.
    let (status, _) = call(&server, "GET", "/health", None, None).await;
    assert_eq!(status, 200);

    // Revoking a key locks it out at once.
    let listed = json_ok(&server, "GET", "/v1/keys", &admin, Value::Null).await;
    let keys_json = listed["data"].as_array().unwrap();
    assert!(keys_json
        .iter()
        .all(|k| k.get("key").is_none() && k["prefix"].is_string()));
    let member_id = keys_json
        .iter()
        .find(|k| k["role"] == "member" && k["revokedAt"].is_null())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = call(
        &server,
        "GET",
        "/v1/conversations",
        Some(&keys.member),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{member_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &server,
        "GET",
        "/v1/conversations",
        Some(&keys.member),
        None,
    )
    .await;
    assert_eq!(status, 401, "a revoked key is refused");
    // Another project's key cannot be revoked from here.
    let b_keys = store.list_api_keys(&b).await.unwrap();
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{}", b_keys[0].id),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn without_keys_the_server_refuses_a_public_address() {
    let dir = common::TempDir::new();
    let toml = format!(
        "[server]\nlisten = \"0.0.0.0:0\"\n[storage]\nurl = \"sqlite://{}\"\n",
        dir.path().join("db.sqlite").display()
    );
    let config = modelyard_server::Config::from_toml(&toml, "<test>", None, &|_| None).unwrap();
    let err = modelyard_server::start(config, &|_| None)
        .await
        .expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("without API keys"), "{message}");
    assert!(message.contains("modelyard keys create"), "{message}");
}

/// `POST /v1/keys` with `key` (or none, in open mode); returns `(id, secret)`.
async fn new_key(server: &TestServer, key: &str, role: &str) -> (String, String) {
    let created = json_ok(server, "POST", "/v1/keys", key, json!({"role": role})).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
    )
}

/// Polls `GET /v1/conversations` without a key until it answers `status`.
async fn eventually_unkeyed_status(server: &TestServer, status: u16, within: Duration, what: &str) {
    eventually(within, what, || async move {
        let (got, text) = call(server, "GET", "/v1/conversations", None, None).await;
        if got == status {
            Ok(())
        } else {
            Err(format!("{got}: {text}"))
        }
    })
    .await;
}

#[tokio::test]
async fn the_last_admin_key_of_a_project_cannot_be_revoked() {
    let server = TestServer::start().await;
    let (first_id, first) = new_key(&server, "", "admin").await;
    // Given one admin key, when it revokes itself, then 409 says what to do.
    let response = server
        .http
        .delete(server.url(&format!("/v1/keys/{first_id}")))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.unwrap();
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("last active admin key") && detail.contains("create another admin key"),
        "{body}"
    );
    assert_eq!(body["code"], "last_admin_key", "{body}");
    // A member key does not count as a way to manage keys.
    let (member_id, _) = new_key(&server, &first, "member").await;
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{first_id}"),
        Some(&first),
        None,
    )
    .await;
    assert_eq!(status, 409);
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{member_id}"),
        Some(&first),
        None,
    )
    .await;
    assert_eq!(status, 204, "other keys can be revoked");
    // With a second admin key, the first can go; then the second is the last.
    let (second_id, second) = new_key(&server, &first, "admin").await;
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{first_id}"),
        Some(&second),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{second_id}"),
        Some(&second),
        None,
    )
    .await;
    assert_eq!(status, 409);
    // The store refuses too (what `modelyard keys revoke` calls).
    let store = Store::connect(&server.db_url()).await.unwrap();
    let outcome = store
        .revoke_api_key(&ProjectId::default_project(), &second_id, 1)
        .await
        .unwrap();
    assert_eq!(outcome, modelyard_store::Revoke::LastAdmin);
    let (status, _) = call(&server, "GET", "/v1/keys", Some(&second), None).await;
    assert_eq!(status, 200, "the last admin key still works");
}

#[tokio::test]
async fn keys_stay_required_after_every_key_is_revoked() {
    let server = TestServer::start().await;
    // Given a running server in open mode, when the CLI makes a key next to
    // it (a member key: no admin rule stands in the way of revoking it)...
    let store = Store::connect(&server.db_url()).await.unwrap();
    let project = ProjectId::default_project();
    let (row, secret) =
        modelyard_server::service::keys::create(&store, &project, Some("cli".into()), Role::Member)
            .await
            .map(|k| (k.row, k.secret))
            .unwrap();
    // ... then the server picks it up.
    eventually_unkeyed_status(
        &server,
        401,
        Duration::from_secs(10),
        "the server requires keys after the CLI created one",
    )
    .await;
    let (status, _) = call(&server, "GET", "/v1/conversations", Some(&secret), None).await;
    assert_eq!(status, 200);
    // When the CLI revokes the only key, then the server stays closed, also
    // after its periodic re-read of the store...
    let revoked = store
        .revoke_api_key(&project, &row.id, modelyard_server::clock::now_ms())
        .await
        .unwrap();
    assert_eq!(revoked, modelyard_store::Revoke::Revoked);
    tokio::time::sleep(modelyard_server::auth::KEY_COUNT_INTERVAL + Duration::from_secs(1)).await;
    for key in [None, Some("sk-anything"), Some(secret.as_str())] {
        let (status, text) = call(&server, "GET", "/v1/conversations", key, None).await;
        assert_eq!(status, 401, "{key:?}: {text}");
    }
    // ... and after a restart with no active key.
    let dir = server.shutdown().await;
    let server = TestServer::builder().dir(dir).start().await;
    let (status, text) = call(&server, "GET", "/v1/conversations", None, None).await;
    assert_eq!(status, 401, "{text}");
    let (status, _) = call(
        &server,
        "POST",
        "/v1/keys",
        None,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 401, "nobody can make a key over HTTP any more");
}

/// Reads `response`'s body until it ends; `Err` if it is still open after
/// `within`.
async fn ends_within(response: reqwest::Response, within: Duration) -> Result<String, String> {
    let mut response = response;
    let mut seen = String::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
    };
    match tokio::time::timeout(within, read).await {
        Ok(()) => Ok(seen),
        Err(_) => Err(seen),
    }
}

#[tokio::test]
async fn a_revoked_key_ends_its_open_streams() {
    let server = TestServer::builder()
        .listed(&["echo", "slow:3000"])
        .start()
        .await;
    let (_, admin) = new_key(&server, "", "admin").await;
    let (member_id, member) = new_key(&server, &admin, "member").await;
    let (cli_member_id, cli_member) = new_key(&server, &admin, "member").await;
    let conv = json_ok(&server, "POST", "/v1/conversations", &admin, json!({})).await;
    let conv = conv["id"].as_str().unwrap().to_owned();
    // Given a slow gateway stream and a conversation event feed of one key,
    // and a feed of another...
    let gateway = server
        .http
        .post(server.url("/v1/chat/completions"))
        .bearer_auth(&member)
        .json(&json!({"model": "mock/slow:3000", "stream": true,
                      "messages": [{"role": "user", "content": "one two three four five six"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(gateway.status(), 200);
    let events_of = |key: &str| {
        server
            .http
            .get(server.url(&format!("/v1/conversations/{conv}/events")))
            .bearer_auth(key)
            .send()
    };
    let feed = events_of(&member).await.unwrap();
    assert_eq!(feed.status(), 200);
    let cli_feed = events_of(&cli_member).await.unwrap();
    assert_eq!(cli_feed.status(), 200);
    let admin_feed = events_of(&admin).await.unwrap();
    // ... when the key is revoked over the API, then both of its streams end
    // within 10 s, long before the upstream would have finished.
    let (status, _) = call(
        &server,
        "DELETE",
        &format!("/v1/keys/{member_id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (gateway, feed) = tokio::join!(
        ends_within(gateway, Duration::from_secs(10)),
        ends_within(feed, Duration::from_secs(10))
    );
    let gateway = gateway.expect("the gateway stream ended after the revoke");
    assert!(!gateway.contains("[DONE]"), "cut short: {gateway}");
    feed.expect("the events feed ended after the revoke");
    // When another key is revoked by another process (the CLI writes the
    // store), then its stream ends within 10 s too.
    let store = Store::connect(&server.db_url()).await.unwrap();
    let outcome = store
        .revoke_api_key(
            &ProjectId::default_project(),
            &cli_member_id,
            modelyard_server::clock::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(outcome, modelyard_store::Revoke::Revoked);
    ends_within(cli_feed, Duration::from_secs(10))
        .await
        .expect("the feed of a key revoked by the CLI ended");
    // Other keys' streams go on.
    assert!(
        ends_within(admin_feed, Duration::from_millis(300))
            .await
            .is_err(),
        "the admin's feed is still open"
    );
}

/// A TCP proxy in front of PostgreSQL that can stop forwarding (a network
/// partition: connections stay open, nothing arrives, new ones hang).
struct Partition {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Partition {
    async fn start(target: String) -> Partition {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, _) = tokio::sync::watch::channel(true);
        let gate = up.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut open = gate.subscribe();
                let target = target.clone();
                let gate = gate.clone();
                tokio::spawn(async move {
                    if open.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let pipe =
                        |mut from: tokio::net::tcp::OwnedReadHalf,
                         mut to: tokio::net::tcp::OwnedWriteHalf,
                         mut open: tokio::sync::watch::Receiver<bool>| async move {
                            let mut buf = vec![0u8; 16 * 1024];
                            loop {
                                let n = match from.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if open.wait_for(|up| *up).await.is_err() {
                                    return;
                                }
                                if to.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        };
                    let up = tokio::spawn(pipe(cr, sw, gate.subscribe()));
                    pipe(sr, cw, gate.subscribe()).await;
                    up.abort();
                });
            }
        });
        Partition { addr, up }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

#[tokio::test]
async fn a_key_lookup_fails_fast_while_the_database_is_down() {
    use sqlx::{Connection, Executor};
    let Ok(admin_url) = std::env::var("MODELYARD_TEST_POSTGRES_URL") else {
        eprintln!("skipped: set MODELYARD_TEST_POSTGRES_URL to run it on PostgreSQL");
        return;
    };
    // A fresh database, reached through a proxy that can partition it away.
    let db = format!("modelyard_auth_{}", uuid_like());
    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {db}").as_str())
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    let target = format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port_or_known_default().unwrap_or(5432)
    );
    let partition = Partition::start(target).await;
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(partition.addr.port())).unwrap();
    url.set_path(&format!("/{db}"));
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"{url}\"\n");
    let config = modelyard_server::Config::from_toml(&toml, "<test>", None, &|_| None).unwrap();
    let server = modelyard_server::start(config, &|_| None).await.unwrap();
    let base = server.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created: Value = http
        .post(format!("{base}/v1/keys"))
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let models = |key: String| {
        http.get(format!("{base}/v1/models"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(models(key.clone()).await.unwrap().status(), 200);

    // Given the database unreachable (connections open, nothing answers),
    // when a request brings a key the server has not seen, then it gets a
    // 503 within 2 s instead of waiting for the pool.
    partition.set_up(false);
    let started = Instant::now();
    let response = models(common_random_key()).await;
    let elapsed = started.elapsed();
    partition.set_up(true);
    let response = response.expect("an answer, not a client timeout");
    assert_eq!(response.status(), 503, "after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    // Once it is back, keys are checked again.
    assert_eq!(models(common_random_key()).await.unwrap().status(), 401);
    assert_eq!(models(key).await.unwrap().status(), 200);

    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("server stops");
    let _ = admin
        .execute(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)").as_str())
        .await;
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    format!(
        "{}_{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A well-formed key nobody has.
fn common_random_key() -> String {
    modelyard_server::auth::generate_key().secret
}
