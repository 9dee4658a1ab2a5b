//! The embedded web UI: `/ui` and its assets answer with the right content
//! types, `/` redirects to `/ui`, the UI stays public once API keys exist
//! (the API does not), and the script never assigns `innerHTML`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::TestServer;
use modelyard_testkit::eventually;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get(client: &reqwest::Client, server: &TestServer, path: &str) -> reqwest::Response {
    client
        .get(server.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> String {
    response
        .headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Checks the UI documents: status, content type, no-cache, a body.
async fn assert_ui_served(client: &reqwest::Client, server: &TestServer) {
    for (path, content_type, marker) in [
        ("/ui", "text/html", "/ui/assets/app.js"),
        ("/ui/assets/app.js", "text/javascript", "function api("),
        (
            "/ui/assets/arena.js",
            "text/javascript",
            "function pageArena(",
        ),
        ("/ui/assets/app.css", "text/css", "prefers-color-scheme"),
    ] {
        let response = get(client, server, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            header(&response, CONTENT_TYPE).starts_with(content_type),
            "{path}: {:?}",
            response.headers().get(CONTENT_TYPE)
        );
        assert_eq!(header(&response, CACHE_CONTROL), "no-cache", "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(marker), "{path} lacks {marker:?}");
    }
}

#[tokio::test]
async fn ui_routes_answer_and_root_redirects() {
    let server = TestServer::start().await;
    let client = no_redirects();
    assert_ui_served(&client, &server).await;

    let root = get(&client, &server, "/").await;
    assert!(root.status().is_redirection(), "{}", root.status());
    assert_eq!(header(&root, LOCATION), "/ui");

    let missing = get(&client, &server, "/ui/assets/nope.js").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn ui_stays_public_when_keys_are_required() {
    let server = TestServer::start().await;
    let client = no_redirects();
    let created = client
        .post(server.url("/v1/keys"))
        .json(&json!({"role": "admin", "name": "ui test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The server notices the first key within a few seconds.
    let (c, s) = (&client, &server);
    eventually(
        Duration::from_secs(8),
        "catalog answers 401",
        || async move {
            let status = get(c, s, "/v1/catalog").await.status();
            if status == 401 {
                Ok(())
            } else {
                Err(status)
            }
        },
    )
    .await;
    assert_ui_served(&client, &server).await;
    let root = get(&client, &server, "/").await;
    assert!(root.status().is_redirection(), "{}", root.status());
}

#[test]
fn app_js_never_assigns_inner_html() {
    for source in [modelyard_server::ui::APP_JS, modelyard_server::ui::ARENA_JS] {
        assert!(
            !source.contains("innerHTML") && !source.contains("outerHTML"),
            "the scripts must build the DOM with createElement / textContent"
        );
        assert!(!source.contains("insertAdjacentHTML") && !source.contains("document.write"));
    }
    for asset in [
        modelyard_server::ui::INDEX_HTML,
        modelyard_server::ui::APP_JS,
        modelyard_server::ui::ARENA_JS,
        modelyard_server::ui::APP_CSS,
    ] {
        // The SVG namespace is a name, not a URL that is fetched.
        let asset = asset.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !asset.contains("http://") && !asset.contains("https://"),
            "the UI loads nothing from other origins"
        );
    }
}
