//! One HTTP client per provider.
//!
//! Base URLs: a provider's `base_url` is either its server root
//! (`http://127.0.0.1:8080`) or its OpenAI API base ending in `/v1`
//! (`https://openrouter.ai/api/v1`). The API base is the URL ending in `/v1`;
//! the server root (for `/health`) is the same URL without it.
//!
//! Timeouts ([`Timeouts`], all in milliseconds):
//! - `connect_ms`: TCP + TLS connect.
//! - `first_token_ms`: streaming only; from sending the request to the first
//!   body chunk.
//! - `idle_ms`: streaming only; the longest gap between two body chunks.
//! - `total_ms`: the whole exchange, streaming or not.
//!
//! Credentials are sent only to the provider's own origin (as `Authorization:
//! Bearer`, or `x-api-key` plus a default `anthropic-version` for kind
//! `anthropic`): redirects are never followed, and error messages never
//! contain the key or a URL query.
//!
//! An LLM config's custom base URL gets its own client
//! ([`ProviderClient::guarded`]): no key, no extra headers, no proxy (not
//! even from the environment), no redirects (a 3xx is an upstream status like
//! any other), and every host name is resolved through a
//! [`GuardedResolver`] that only connects to addresses the
//! [`crate::ssrf::AddressPolicy`] allows.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use secrecy::{ExposeSecret, SecretString};
use tokio::time::{timeout_at, Instant};
use url::Url;

use crate::kind::{KeyHeader, ProviderKind, ANTHROPIC_VERSION};
use crate::ssrf::GuardedResolver;

mod control;
mod error;
mod response;
#[cfg(test)]
mod tests;

use error::error_chain;

pub use control::ModelControl;
pub use error::{TimeoutPhase, UpstreamError};
pub use response::UpstreamResponse;

/// Timeouts of one provider, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP (+ TLS) connect, ms.
    pub connect_ms: u64,
    /// Streaming: request sent → first body chunk, ms.
    pub first_token_ms: u64,
    /// Streaming: longest silence between body chunks, ms.
    pub idle_ms: u64,
    /// Whole exchange, ms.
    pub total_ms: u64,
    /// One discovery or health probe, ms.
    pub probe_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: 5_000,
            first_token_ms: 120_000,
            idle_ms: 60_000,
            total_ms: 600_000,
            probe_ms: 5_000,
        }
    }
}

/// Everything needed to talk to one provider.
#[derive(Debug, Clone)]
pub struct ProviderEndpoint {
    /// Provider name (for messages).
    pub name: String,
    /// Server kind.
    pub kind: ProviderKind,
    /// Server root or API base (see the module docs).
    pub base_url: Url,
    /// API key, resolved from the environment: sent as `Authorization:
    /// Bearer` (as `x-api-key` for kind `anthropic`, see
    /// [`ProviderKind::key_header`]).
    pub api_key: Option<SecretString>,
    /// Extra headers sent with every request (non-secret).
    pub headers: Vec<(String, String)>,
    /// Forward proxy for this provider only (`http://`, `https://`).
    pub proxy_url: Option<Url>,
    /// Timeouts.
    pub timeouts: Timeouts,
}

/// HTTP client for one provider.
#[derive(Debug, Clone)]
pub struct ProviderClient {
    endpoint: ProviderEndpoint,
    http: reqwest::Client,
    api_base: String,
    server_root: String,
    chat_url: Url,
}

/// The chat-completions path under the API base (`{api_base}/chat/completions`).
pub const CHAT_COMPLETIONS_PATH: &str = "chat/completions";

/// Anthropic's Messages path under the API base (`{api_base}/messages`).
pub const MESSAGES_PATH: &str = "messages";

/// Anthropic's token-count path under the API base
/// (`{api_base}/messages/count_tokens`).
pub const MESSAGES_COUNT_TOKENS_PATH: &str = "messages/count_tokens";

/// Strips userinfo and query from a URL for messages and logs.
pub fn redact_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "<invalid url>".to_owned(),
    }
}

impl ProviderClient {
    /// Builds the client: connect timeout, no redirects, `TCP_NODELAY`,
    /// default headers (key and configured headers).
    ///
    /// # Errors
    /// [`UpstreamError::Config`] for a header that is not valid HTTP or a
    /// client that cannot be built.
    pub fn new(endpoint: ProviderEndpoint) -> Result<Self, UpstreamError> {
        Self::build(endpoint, None)
    }

    /// A client for a custom base URL (an LLM config's `baseUrl` that is no
    /// configured provider's): kind `openai`, no credentials, no extra
    /// headers, no proxy, no redirects, and every host name resolved through
    /// `resolver`, which keeps only the addresses its policy allows (checked
    /// at connect time, after DNS). The URL itself must pass the policy's
    /// static check ([`crate::ssrf::AddressPolicy::check_url`]): reqwest does
    /// not resolve IP-literal hosts.
    ///
    /// # Errors
    /// [`UpstreamError::Config`] when the policy refuses `base_url` or the
    /// client cannot be built.
    pub fn guarded(
        name: &str,
        base_url: Url,
        timeouts: Timeouts,
        resolver: GuardedResolver,
    ) -> Result<Self, UpstreamError> {
        resolver
            .policy()
            .check_url(&base_url)
            .map_err(|e| UpstreamError::Config {
                provider: name.to_owned(),
                reason: format!("base URL {}: {e}", redact_url(base_url.as_str())),
            })?;
        let endpoint = ProviderEndpoint {
            name: name.to_owned(),
            kind: ProviderKind::OpenAi,
            base_url,
            api_key: None,
            headers: Vec::new(),
            proxy_url: None,
            timeouts,
        };
        Self::build(endpoint, Some(Arc::new(resolver)))
    }

    fn build(
        endpoint: ProviderEndpoint,
        resolver: Option<Arc<GuardedResolver>>,
    ) -> Result<Self, UpstreamError> {
        let config_err = |reason: String| UpstreamError::Config {
            provider: endpoint.name.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &endpoint.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| config_err(format!("header name {name:?}: {e}")))?;
            let value = HeaderValue::from_str(value)
                .map_err(|e| config_err(format!("header {name}: {e}")))?;
            headers.insert(name, value);
        }
        if let Some(key) = &endpoint.api_key {
            let (name, text) = match endpoint.kind.key_header() {
                KeyHeader::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose_secret())),
                KeyHeader::XApiKey => (
                    HeaderName::from_static("x-api-key"),
                    key.expose_secret().to_owned(),
                ),
            };
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| config_err("API key is not a valid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if endpoint.kind == ProviderKind::Anthropic && !headers.contains_key("anthropic-version") {
            headers.insert(
                HeaderName::from_static("anthropic-version"),
                HeaderValue::from_static(ANTHROPIC_VERSION),
            );
        }
        let mut builder = reqwest::Client::builder();
        builder = match &endpoint.proxy_url {
            Some(proxy) => builder.proxy(
                reqwest::Proxy::all(proxy.as_str())
                    .map_err(|e| config_err(format!("proxy_url: {e}")))?,
            ),
            // Only a configured proxy is used: never pick one up from the environment.
            None => builder.no_proxy(),
        };
        if let Some(resolver) = resolver {
            builder = builder.dns_resolver(resolver);
        }
        let http = builder
            .default_headers(headers)
            .connect_timeout(Duration::from_millis(endpoint.timeouts.connect_ms))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| config_err(format!("cannot build HTTP client: {e}")))?;
        let base = endpoint.base_url.as_str().trim_end_matches('/').to_owned();
        let (api_base, server_root) = match base.strip_suffix("/v1") {
            Some(root) => (base.clone(), root.to_owned()),
            None => (format!("{base}/v1"), base.clone()),
        };
        // Parsed once: a request given a string parses it again (with IDNA
        // host processing), a few percent of a proxied request's CPU.
        let chat_url = Url::parse(&format!("{api_base}/{CHAT_COMPLETIONS_PATH}"))
            .map_err(|e| config_err(format!("base URL: {e}")))?;
        Ok(Self {
            endpoint,
            http,
            api_base,
            server_root,
            chat_url,
        })
    }

    /// The endpoint this client was built from.
    pub fn endpoint(&self) -> &ProviderEndpoint {
        &self.endpoint
    }

    /// The OpenAI API base (ends in `/v1`).
    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    pub(crate) fn name(&self) -> String {
        self.endpoint.name.clone()
    }

    fn send_error(&self, url: &str, err: reqwest::Error) -> UpstreamError {
        if err.is_timeout() {
            return UpstreamError::Timeout {
                provider: self.name(),
                phase: TimeoutPhase::Connect,
                limit_ms: self.endpoint.timeouts.connect_ms,
            };
        }
        UpstreamError::Unreachable {
            provider: self.name(),
            url: redact_url(url),
            reason: error_chain(&err.without_url()),
        }
    }

    /// `POST {api_base}/chat/completions` with `body` as is
    /// ([`Self::post_json`] with [`CHAT_COMPLETIONS_PATH`]).
    ///
    /// # Errors
    /// As [`Self::post_json`].
    pub async fn chat_completions(
        &self,
        body: Bytes,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.post_json(CHAT_COMPLETIONS_PATH, body, stream).await
    }

    /// `POST {api_base}/{path}` with the JSON `body` as is: any
    /// OpenAI-style endpoint (`chat/completions`, `completions`,
    /// `embeddings`, `rerank`), under the same deadlines, headers and
    /// redirect rule as chat.
    ///
    /// For `stream == true`, the response must arrive and its first chunk be
    /// read within `first_token_ms`; otherwise only `total_ms` applies.
    ///
    /// # Errors
    /// [`UpstreamError::Unreachable`] or [`UpstreamError::Timeout`]; a
    /// non-success HTTP status is *not* an error here (see
    /// [`UpstreamResponse::status`]).
    pub async fn post_json(
        &self,
        path: &str,
        body: Bytes,
        stream: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.post_json_with(path, body, stream, None).await
    }

    /// [`Self::post_json`] with `headers` added to the request (the
    /// server's trace context: `traceparent`, `tracestate`); one of the
    /// same name as a provider header replaces it for this request.
    ///
    /// # Errors
    /// As [`Self::post_json`].
    pub async fn post_json_with(
        &self,
        path: &str,
        body: Bytes,
        stream: bool,
        headers: Option<reqwest::header::HeaderMap>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let other;
        let (url, request) = if path == CHAT_COMPLETIONS_PATH {
            (
                self.chat_url.as_str(),
                self.http.post(self.chat_url.clone()),
            )
        } else {
            other = format!("{}/{}", self.api_base, path.trim_start_matches('/'));
            (other.as_str(), self.http.post(other.as_str()))
        };
        let t = self.endpoint.timeouts;
        let started = Instant::now();
        let total_deadline = started + Duration::from_millis(t.total_ms);
        let (first_deadline, phase, limit_ms) = if stream && t.first_token_ms < t.total_ms {
            (
                started + Duration::from_millis(t.first_token_ms),
                TimeoutPhase::FirstToken,
                t.first_token_ms,
            )
        } else {
            (total_deadline, TimeoutPhase::Total, t.total_ms)
        };
        let mut request = request.header(CONTENT_TYPE, "application/json");
        if let Some(headers) = headers {
            request = request.headers(headers);
        }
        let request = request.body(body).send();
        let response = match timeout_at(first_deadline, request).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(self.send_error(url, err)),
            Err(_) => {
                return Err(UpstreamError::Timeout {
                    provider: self.name(),
                    phase,
                    limit_ms,
                })
            }
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        Ok(UpstreamResponse {
            provider: self.name(),
            status: response.status().as_u16(),
            content_type,
            response,
            first_chunk: Some((first_deadline, phase, limit_ms)),
            idle: Duration::from_millis(t.idle_ms),
            idle_ms: t.idle_ms,
            total_deadline,
            total_ms: t.total_ms,
            secret: self.endpoint.api_key.clone(),
        })
    }

    /// The server root (the base URL without a trailing `/v1`).
    pub fn server_root(&self) -> &str {
        &self.server_root
    }

    /// A discovery probe: `GET` (or `POST` with a JSON body) under the
    /// provider's `probe_ms` deadline. Returns the body of a 2xx answer.
    ///
    /// # Errors
    /// Any [`UpstreamError`]; a non-2xx status is [`UpstreamError::Status`].
    pub(crate) async fn probe(
        &self,
        url: &str,
        json_body: Option<&serde_json::Value>,
    ) -> Result<Bytes, UpstreamError> {
        let limit_ms = self.endpoint.timeouts.probe_ms;
        self.exchange(url, json_body, limit_ms, TimeoutPhase::Probe)
            .await
    }

    /// `GET` `url` (or `POST` `json_body`) within `limit_ms` (`phase` names
    /// that deadline); the body of a 2xx answer.
    ///
    /// # Errors
    /// Any [`UpstreamError`]; a non-2xx status is [`UpstreamError::Status`].
    async fn exchange(
        &self,
        url: &str,
        json_body: Option<&serde_json::Value>,
        limit_ms: u64,
        phase: TimeoutPhase,
    ) -> Result<Bytes, UpstreamError> {
        let deadline = Instant::now() + Duration::from_millis(limit_ms);
        let exchange = async {
            let request = match json_body {
                Some(body) => self.http.post(url).json(body),
                None => self.http.get(url),
            };
            let response = request.send().await.map_err(|e| self.send_error(url, e))?;
            if !response.status().is_success() {
                return Err(UpstreamError::Status {
                    provider: self.name(),
                    status: response.status().as_u16(),
                    url: redact_url(url),
                });
            }
            response.bytes().await.map_err(|e| UpstreamError::Body {
                provider: self.name(),
                reason: error_chain(&e.without_url()),
            })
        };
        timeout_at(deadline, exchange).await.unwrap_or_else(|_| {
            Err(UpstreamError::Timeout {
                provider: self.name(),
                phase,
                limit_ms,
            })
        })
    }

    /// [`Self::probe`] and parse the answer as JSON.
    pub(crate) async fn probe_json(
        &self,
        url: &str,
        json_body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, UpstreamError> {
        let bytes = self.probe(url, json_body).await?;
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::InvalidResponse {
            provider: self.name(),
            reason: format!("{} is not JSON: {e}", redact_url(url)),
        })
    }
}
