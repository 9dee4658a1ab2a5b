//! Per-provider `proxy_url`: a provider with one sends everything (discovery,
//! chat) through that forward proxy, a provider without one goes direct — the
//! proxy is an attribute of the provider, never global. A recording forward
//! proxy ([`RecordingProxy`]) sits in front of one of two mocks and says
//! which URLs it was asked for.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{chat_body, named_mock_url, sse_data, TestServer};
use modelyard_testkit::proxy::RecordingProxy;
use modelyard_testkit::{eventually, Flavour, MockModel, MockOptions};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(15);

/// `fleet` (through `proxy`) and `embedding` (direct, the default mock).
async fn two_providers(proxy: &RecordingProxy) -> TestServer {
    let providers = format!(
        "[[providers]]\nname = \"fleet\"\nkind = \"openai\"\nbase_url = \"{fleet}\"\n\
         proxy_url = \"{proxy}\"\n\n\
         [[providers]]\nname = \"embedding\"\nkind = \"openai\"\nbase_url = \"{{mock}}\"\n",
        fleet = named_mock_url("fleet"),
        proxy = proxy.url(),
    );
    let server = TestServer::builder()
        .providers(&providers)
        .listed(&["echo", "embed-small"])
        .mock(
            "fleet",
            MockOptions::new(Flavour::OpenAi, vec![MockModel::new("echo", Some(4096))]),
        )
        .start()
        .await;
    // Both listed: the fleet's discovery went through the proxy.
    eventually(LIMIT, "fleet/echo and embedding/echo listed", || async {
        let list = server.get_json("/v1/models").await;
        let ids: Vec<&str> = list["data"]
            .as_array()
            .map(|d| d.iter().filter_map(|m| m["id"].as_str()).collect())
            .unwrap_or_default();
        if ids.contains(&"fleet/echo") && ids.contains(&"embedding/echo") {
            Ok(())
        } else {
            Err(list.to_string())
        }
    })
    .await;
    server
}

/// `POST path` with `body`: status and JSON answer.
async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The paths (without the query) of the proxied requests to `base`.
fn proxied_paths(proxy: &RecordingProxy, base: &str) -> Vec<String> {
    proxy
        .requests()
        .into_iter()
        .filter_map(|r| {
            r.url
                .strip_prefix(base)
                .map(|p| p.split('?').next().unwrap_or(p).to_owned())
        })
        .collect()
}

#[tokio::test]
async fn only_the_provider_with_a_proxy_url_goes_through_it() {
    let proxy = RecordingProxy::start().await;
    let server = two_providers(&proxy).await;
    let fleet = server.named("fleet");
    let fleet_base = fleet.base_url();
    let direct_base = server.mock.base_url();

    // A chat completion to each provider, streamed and not, and an
    // embedding to the direct one.
    for stream in [false, true] {
        for model in ["fleet/echo", "embedding/echo"] {
            let mut body = chat_body(model, stream);
            body["messages"] = json!([{"role": "user", "content": format!("hello {model}")}]);
            let response = server.chat(&body).await;
            assert_eq!(response.status(), 200, "{model} stream={stream}");
            let text = response.text().await.unwrap();
            let answer = if stream {
                sse_data(&text)
                    .iter()
                    .filter(|d| *d != "[DONE]")
                    .map(|d| {
                        let chunk: Value = serde_json::from_str(d).unwrap();
                        chunk["choices"][0]["delta"]["content"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned()
                    })
                    .collect::<String>()
            } else {
                let completion: Value = serde_json::from_str(&text).unwrap();
                completion["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            assert!(
                answer.contains(&format!("hello {model}")),
                "{model} stream={stream}: the echo came back: {text}"
            );
        }
    }
    let (status, embedded) = post(
        &server,
        "/v1/embeddings",
        &json!({"model": "embedding/embed-small", "input": "hello wide world"}),
    )
    .await;
    assert_eq!(status, 200, "{embedded}");
    assert_eq!(embedded["data"][0]["object"], "embedding", "{embedded}");

    // The proxy saw the fleet's traffic, and nothing else.
    let seen = proxy.requests();
    assert!(
        seen.iter().all(|r| r.url.starts_with(&format!("{fleet_base}/"))),
        "only fleet URLs went through the proxy (fleet {fleet_base}, direct {direct_base}): {seen:#?}"
    );
    assert!(
        !seen.iter().any(|r| r.url.starts_with(&direct_base)),
        "{seen:#?}"
    );
    let fleet_paths = proxied_paths(&proxy, &fleet_base);
    let chats = fleet_paths
        .iter()
        .filter(|p| *p == "/v1/chat/completions")
        .count();
    assert_eq!(
        chats, 2,
        "both fleet chats went through the proxy: {seen:#?}"
    );
    assert!(
        fleet_paths.iter().any(|p| p == "/v1/models"),
        "the fleet's discovery went through the proxy too: {seen:#?}"
    );
    assert!(
        seen.iter()
            .filter(|r| r.url.ends_with("/v1/chat/completions"))
            .all(|r| r.method == "POST"),
        "{seen:#?}"
    );

    // Every request the fleet's host got came through the proxy: its
    // chats are the proxied ones (the only client of the fleet mock is the
    // server, and the server's only way there is the proxy).
    let fleet_chats = fleet
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count();
    assert_eq!(fleet_chats, 2);
    for r in fleet.requests() {
        assert!(
            fleet_paths.contains(&r.path),
            "{} {} reached the fleet without the proxy: {seen:#?}",
            r.method,
            r.path
        );
    }

    // The direct provider's host got its chats and the embedding itself.
    let direct = server.mock.requests();
    let direct_paths: Vec<&str> = direct.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        direct_paths
            .iter()
            .filter(|p| **p == "/v1/chat/completions")
            .count(),
        2,
        "{direct_paths:?}"
    );
    assert!(direct_paths.contains(&"/v1/embeddings"), "{direct_paths:?}");
}

#[tokio::test]
async fn a_provider_behind_an_unreachable_proxy_fails_while_the_direct_one_serves() {
    // A port nothing listens on any more.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let providers = format!(
        "[[providers]]\nname = \"fleet\"\nkind = \"openai\"\nbase_url = \"{fleet}\"\n\
         proxy_url = \"{dead}\"\nprobe_interval_ms = 600000\n\n\
         [[providers]]\nname = \"embedding\"\nkind = \"openai\"\nbase_url = \"{{mock}}\"\n",
        fleet = named_mock_url("fleet"),
    );
    let server = TestServer::builder()
        .providers(&providers)
        .listed(&["echo"])
        .mock(
            "fleet",
            MockOptions::new(Flavour::OpenAi, vec![MockModel::new("echo", Some(4096))]),
        )
        .start()
        .await;
    let response = server.chat(&chat_body("embedding/echo", false)).await;
    assert_eq!(response.status(), 200);
    // The fleet is reachable directly, but its provider only goes through
    // its proxy: nothing gets there.
    let response = server.chat(&chat_body("fleet/echo", false)).await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    // The composite id names the provider, so the call is tried: the
    // connection to the proxy is refused.
    assert_eq!(status, 502, "fleet/echo without its proxy: {body}");
    assert_eq!(body["error"]["type"], "upstream_unreachable", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("provider 'fleet' is unreachable") && message.contains("refused"),
        "{body}"
    );
    assert!(
        server.named("fleet").requests().is_empty(),
        "nothing reached the fleet's host directly: {:#?}",
        server.named("fleet").requests()
    );
}
