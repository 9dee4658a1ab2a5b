//! [`RecordingProxy`]: a plain-HTTP forward proxy that records every request it forwards.
//!
//! A client configured with it as its HTTP proxy sends the request line in absolute form
//! (`POST http://127.0.0.1:<port>/v1/chat/completions HTTP/1.1`); the proxy records the method
//! and that absolute URL ([`ProxiedRequest`]), then forwards the request (method, headers minus
//! the hop-by-hop ones, body streamed) to the URL's host directly, and streams the answer back
//! (status, headers minus the hop-by-hop ones, body), so SSE arrives chunk by chunk.
//!
//! What it is not: a `CONNECT` tunnel (`https://` targets get `405`), an authenticating proxy, or
//! a server (a request in origin form, `GET /path`, gets `400`). A target that cannot be reached
//! gets `502` with the reason as text. Its own outgoing client uses no proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::oneshot;

use crate::upstream::lock;

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1,
/// plus the proxy-only ones).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// One request the proxy forwarded (or tried to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// HTTP method, e.g. `"POST"`.
    pub method: String,
    /// The absolute target URL of the request line, e.g.
    /// `"http://127.0.0.1:4000/v1/chat/completions"` (with its query string, if any).
    pub url: String,
}

struct Shared {
    log: Mutex<Vec<ProxiedRequest>>,
    client: reqwest::Client,
}

/// A recording forward HTTP proxy on `127.0.0.1:<port>` (see the module docs). It stops
/// accepting connections when dropped.
pub struct RecordingProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl std::fmt::Debug for RecordingProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RecordingProxy {
    /// Binds `127.0.0.1:0` and serves on a spawned tokio task; returns once the listener is
    /// bound.
    ///
    /// # Panics
    /// If the socket cannot be bound or the forwarding client cannot be built.
    pub async fn start() -> RecordingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("recording proxy: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("recording proxy: local address");
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("recording proxy: build the forwarding client");
        let shared = Arc::new(Shared {
            log: Mutex::default(),
            client,
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        RecordingProxy {
            addr,
            shared,
            shutdown: Some(tx),
        }
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"http://127.0.0.1:<port>"`: the value for a client's proxy setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received, in arrival order (recorded before it is forwarded).
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        lock(&self.shared.log).clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

fn end_to_end(
    headers: &HeaderMap,
) -> impl Iterator<Item = (&HeaderName, &axum::http::HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
}

async fn forward(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.method == Method::CONNECT {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "recording proxy: CONNECT (https) is not supported".into(),
        );
    }
    let uri = &parts.uri;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            format!("recording proxy: not an absolute http:// request target: {uri}"),
        );
    }
    let url = uri.to_string();
    lock(&shared.log).push(ProxiedRequest {
        method: parts.method.to_string(),
        url: url.clone(),
    });
    let mut outgoing = shared
        .client
        .request(parts.method.clone(), &url)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    for (name, value) in end_to_end(&parts.headers) {
        outgoing = outgoing.header(name, value);
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("recording proxy: {url}: {e}"),
            )
        }
    };
    let mut response = Response::builder().status(answer.status());
    for (name, value) in end_to_end(answer.headers()) {
        response = response.header(name, value);
    }
    response
        .body(Body::from_stream(answer.bytes_stream()))
        .unwrap_or_else(|e| {
            text(
                StatusCode::BAD_GATEWAY,
                format!("recording proxy: {url}: {e}"),
            )
        })
}
