//! A small HTTP client for Modelyard's API, used by the CLI commands.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Client of one Modelyard server.
pub(crate) struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:4000`); with
    /// `MODELYARD_API_KEY` set, every request sends it as a bearer token
    /// (marked sensitive, so it never shows in debug output).
    pub(crate) fn new(base: String) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(key) = std::env::var("MODELYARD_API_KEY")
            .ok()
            .filter(|k| !k.is_empty())
        {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
                .context("MODELYARD_API_KEY is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .default_headers(headers)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, http })
    }

    /// `{base}{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The underlying HTTP client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET a JSON document; non-success statuses become errors carrying the
    /// server's message.
    pub(crate) async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .with_context(|| {
                format!(
                    "cannot reach the Modelyard server at {} (is `modelyard serve` running?)",
                    self.base
                )
            })?;
        read_json(response).await
    }
}

/// Reads a JSON response, turning error envelopes (OpenAI or problem+json)
/// into an error with their message.
pub(crate) async fn read_json(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.bytes().await.context("reading the response")?;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("HTTP {status}: the response is not JSON"))?;
    if !status.is_success() {
        let suggestions: Vec<&str> = value
            .get("suggestions")
            .and_then(Value::as_array)
            .map(|s| s.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if suggestions.is_empty() {
            bail!("HTTP {status}: {}", error_message(&value));
        }
        bail!(
            "HTTP {status}: {} (did you mean: {}?)",
            error_message(&value),
            suggestions.join(", ")
        );
    }
    Ok(value)
}

/// The message of an OpenAI error envelope or a problem document.
pub(crate) fn error_message(value: &Value) -> String {
    value
        .pointer("/error/message")
        .or_else(|| value.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// Percent-encodes everything but RFC 3986 unreserved characters (a path
/// segment or a query value).
pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Sends a request; 204 gives `null`, other answers go through [`read_json`].
pub(crate) async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let response = request
        .send()
        .await
        .context("cannot reach the Modelyard server")?;
    if response.status() == reqwest::StatusCode::NO_CONTENT {
        return Ok(Value::Null);
    }
    read_json(response).await
}
