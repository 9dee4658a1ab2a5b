//! The browser attacks on a server without API keys (open mode, loopback):
//! a page whose DNS was rebound to 127.0.0.1 (wrong `Host` → 421), a
//! cross-site `fetch` or form (foreign `Origin` → 403, non-JSON body → 415,
//! and the provider never sees the request), plus CORS for configured
//! origins and the `Host` rules once keys exist.

#![allow(clippy::unwrap_used)]

mod common;

use common::{chat_body, error_envelope, TestServer};
use reqwest::header::CONTENT_TYPE;
use serde_json::{json, Value};

/// Chat requests the mock upstream received.
fn chats_upstream(server: &TestServer) -> usize {
    server
        .mock
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/chat/completions")
        .count()
}

async fn conversations(server: &TestServer) -> usize {
    server.get_json("/v1/conversations").await["data"]
        .as_array()
        .unwrap()
        .len()
}

fn problem_code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_rebound_host_is_misdirected() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    // Given a page on evil.example whose name now resolves to 127.0.0.1,
    // when it calls the API, then the Host gives it away: 421 in each
    // surface's error shape, and no provider is called.
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("host", "evil.example")
        .json(&chat_body("mock/echo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        error_envelope(&body)["code"],
        "misdirected_request",
        "{body}"
    );
    let response = server
        .http
        .get(server.url("/v1/conversations"))
        .header("host", "evil.example:4000")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 421);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    for path in ["/ui", "/v1/models", "/v1/keys"] {
        let response = server
            .http
            .get(server.url(path))
            .header("host", "evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 421, "{path}");
    }
    assert_eq!(chats_upstream(&server), 0);
    // Loopback names and addresses are served; /health always.
    let port = server.base_url.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let response = server
            .http
            .get(server.url("/v1/models"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{host}");
    }
    // A local reverse proxy relaying a remote client does not publish the
    // open server; relaying a local one is fine.
    let response = server
        .http
        .get(server.url("/v1/models"))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_envelope(&body)["code"], "remote_client_in_open_mode");
    let response = server
        .http
        .get(server.url("/v1/models"))
        .header("x-forwarded-for", "127.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server
        .http
        .get(server.url("/health"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_cross_site_origin_is_forbidden() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    // Given a page on another site, when it posts to the API (even with a
    // JSON body, as a fetch after a preflight would), then 403 and nothing
    // happens.
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let response = server
            .http
            .post(server.url("/v1/conversations"))
            .header("origin", origin)
            .json(&json!({"title": "planted"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(problem_code(&body), "origin_not_allowed", "{body}");
        let response = server
            .http
            .post(server.url("/v1/chat/completions"))
            .header("origin", origin)
            .json(&chat_body("mock/echo", false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{origin}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(error_envelope(&body)["code"], "origin_not_allowed");
    }
    // A preflight from it is refused too.
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    assert_eq!(chats_upstream(&server), 0);
    assert_eq!(conversations(&server).await, 0);
    // A page cannot claim to be the server by naming itself as the forwarded
    // host: that header needs a preflight, which is refused.
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/conversations"))
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-forwarded-host")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // The server's own origin (the web UI) is fine, also behind a proxy
    // that rewrites Host and says the public name in X-Forwarded-Host.
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .header("origin", "https://localhost")
        .header("x-forwarded-host", "localhost")
        .json(&json!({"title": "proxied"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let response = server
        .http
        .post(server.url("/v1/conversations"))
        .header("origin", &server.base_url)
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

#[tokio::test]
async fn a_non_json_body_never_reaches_the_provider() {
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let body = serde_json::to_vec(&chat_body("mock/echo", false)).unwrap();
    // Given the requests a browser sends cross-site without a preflight (a
    // form post, a `text/plain` fetch), when they carry a chat request, then
    // 415 and the provider receives nothing.
    for content_type in [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let response = server
            .http
            .post(server.url("/v1/chat/completions"))
            .header(CONTENT_TYPE, content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            error_envelope(&answer)["code"],
            "unsupported_media_type",
            "{answer}"
        );
        let response = server
            .http
            .post(server.url("/v1/conversations"))
            .header(CONTENT_TYPE, content_type)
            .body(r#"{"title": "planted"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 415, "{content_type}");
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
    }
    // A body without any content type is refused as well.
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    assert_eq!(chats_upstream(&server), 0);
    assert_eq!(conversations(&server).await, 0);
    // JSON (with a charset) goes through.
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(chats_upstream(&server), 1);
}

#[tokio::test]
async fn configured_origins_get_cors() {
    let server = TestServer::builder()
        .server(r#"cors_origins = ["http://app.example:5173"]"#)
        .listed(&["echo"])
        .start()
        .await;
    // Given a configured origin, when its page sends a preflight, then it
    // is granted with the usual headers.
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
        .header("origin", "http://app.example:5173")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type,authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://app.example:5173"
    );
    let methods = headers["access-control-allow-methods"].to_str().unwrap();
    assert!(methods.contains("POST"), "{methods}");
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed.contains("content-type") && allowed.contains("authorization"),
        "{allowed}"
    );
    assert!(headers.contains_key("access-control-max-age"));
    // And its request is answered with CORS headers.
    let response = server
        .http
        .post(server.url("/v1/chat/completions"))
        .header("origin", "http://app.example:5173")
        .json(&chat_body("mock/echo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://app.example:5173"
    );
    assert_eq!(response.headers()["vary"], "Origin");
    // Another origin (another port of the same host) gets neither.
    let response = server
        .http
        .request(reqwest::Method::OPTIONS, server.url("/v1/chat/completions"))
        .header("origin", "http://app.example:5174")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = server
        .http
        .get(server.url("/v1/models"))
        .header("origin", "http://app.example:5174")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn with_keys_hosts_follow_allowed_hosts() {
    // Default: with keys, any Host (a reverse proxy's name) is served.
    let server = TestServer::builder().listed(&["echo"]).start().await;
    let created = server
        .http
        .post(server.url("/v1/keys"))
        .json(&json!({"role": "admin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let response = server
        .http
        .get(server.url("/v1/models"))
        .header("host", "gateway.example.com")
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let dir = server.shutdown().await;
    // With server.allowed_hosts, only those.
    let server = TestServer::builder()
        .dir(dir)
        .server(r#"allowed_hosts = ["gateway.example.com", "127.0.0.1"]"#)
        .listed(&["echo"])
        .start()
        .await;
    for (host, status) in [
        ("gateway.example.com", 200),
        ("GATEWAY.example.com:443", 200),
        ("evil.example", 421),
        ("localhost", 421),
    ] {
        let response = server
            .http
            .get(server.url("/v1/models"))
            .header("host", host)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{host}");
    }
    let response = server
        .http
        .get(server.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "127.0.0.1 is listed");
}

#[tokio::test]
async fn the_web_ui_sends_security_headers() {
    let server = TestServer::start().await;
    for path in ["/ui", "/ui/assets/app.js", "/ui/assets/app.css"] {
        let response = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has a CSP"))
            .to_str()
            .unwrap();
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
    }
    // The shell needs no exception: no inline script or style.
    let html = server
        .http
        .get(server.url("/ui"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!html.contains("<style"), "inline style");
    assert!(!html.contains(" style="), "inline style attribute");
    for script in html.split("<script").skip(1) {
        assert!(
            script.trim_start().starts_with("src="),
            "inline script: {script}"
        );
    }
}
