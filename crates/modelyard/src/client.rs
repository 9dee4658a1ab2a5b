//! A small HTTP client for Modelyard's API, used by the CLI commands.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// Client of one Modelyard server.
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:4000`).
    pub fn new(base: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base, http })
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The underlying HTTP client.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// GET a JSON document; non-success statuses become errors carrying the
    /// server's message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
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
pub async fn read_json(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body = response.bytes().await.context("reading the response")?;
    let value: Value = serde_json::from_slice(&body)
        .with_context(|| format!("HTTP {status}: the response is not JSON"))?;
    if !status.is_success() {
        bail!("HTTP {status}: {}", error_message(&value));
    }
    Ok(value)
}

/// The message of an OpenAI error envelope or a problem document.
pub fn error_message(value: &Value) -> String {
    value
        .pointer("/error/message")
        .or_else(|| value.get("detail"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| value.to_string())
}

/// Prints `GET /v1/models` as a table (or JSON).
pub async fn print_models(client: &Client, json: bool) -> anyhow::Result<()> {
    let models = client.get_json("/v1/models").await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&models)?);
        return Ok(());
    }
    let data = models
        .get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if data.is_empty() {
        println!("no models (are providers configured and online?)");
        return Ok(());
    }
    let width = data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str))
        .map(str::len)
        .max()
        .unwrap_or(5)
        .max(5);
    println!("{:<width$}  {:<12}  CONTEXT", "MODEL", "PROVIDER");
    for m in &data {
        let id = m.get("id").and_then(Value::as_str).unwrap_or("?");
        let provider = m.get("provider").and_then(Value::as_str).unwrap_or("?");
        let context = m
            .get("context_window")
            .and_then(Value::as_u64)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into());
        println!("{id:<width$}  {provider:<12}  {context}");
    }
    Ok(())
}
