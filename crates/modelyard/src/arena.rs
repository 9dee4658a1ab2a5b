//! `modelyard arena -m A -m B [--json] "prompt"`: one prompt, several
//! models (`POST /v1/arena`). Streams the run and prints each model's answer
//! under a `== model ==` header when that model ends (so the answers never
//! mix), then one summary line per model (tokens, time to first token,
//! total time) in request order. `--json` prints the non-streamed answer.
//! The exit code is 1 when any model failed.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use modelyard_upstream::sse::SseDecoder;
use serde_json::{json, Value};

use crate::client::{read_json, Client};

/// What to send.
pub(crate) struct ArenaOptions {
    /// The model ids, 2–8.
    pub models: Vec<String>,
    /// An LLM config whose options apply.
    pub llm_id: Option<String>,
    /// Maximum tokens to generate per model.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Print the non-streamed JSON answer.
    pub json: bool,
}

fn request_body(options: &ArenaOptions, prompt: &str) -> Value {
    let mut provider_options = serde_json::Map::new();
    if let Some(n) = options.max_tokens {
        provider_options.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = options.temperature {
        provider_options.insert("temperature".into(), json!(t));
    }
    let mut body = json!({
        "models": options.models,
        "prompt": prompt,
        "stream": !options.json,
    });
    if !provider_options.is_empty() {
        body["options"] = Value::Object(provider_options);
    }
    if let Some(id) = &options.llm_id {
        body["llmId"] = json!(id);
    }
    body
}

/// One model's summary line: tokens, time to first token, total time (or
/// its error).
fn summary_line(model: &str, end: &Value) -> String {
    if let Some(error) = end.get("error").and_then(Value::as_str) {
        return format!("{model}: failed: {error}");
    }
    let number = |v: Option<&Value>| match v.and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "?".to_owned(),
    };
    let usage = end.get("usage");
    format!(
        "{model}: {} prompt + {} completion tokens · ttft {} ms · total {} ms",
        number(usage.and_then(|u| u.get("promptTokens"))),
        number(usage.and_then(|u| u.get("completionTokens"))),
        number(end.get("ttftMs")),
        number(end.get("durationMs")),
    )
}

/// Runs the arena and prints it.
pub(crate) async fn run(
    client: &Client,
    options: &ArenaOptions,
    prompt: &str,
) -> anyhow::Result<ExitCode> {
    let response = client
        .http()
        .post(client.url("/v1/arena"))
        .json(&request_body(options, prompt))
        .send()
        .await
        .context("cannot reach the Modelyard server (is `modelyard serve` running?)")?;
    if options.json || !response.status().is_success() {
        let value = read_json(response).await?;
        println!("{}", serde_json::to_string_pretty(&value)?);
        let failed = value
            .get("results")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|r| r["status"] != "completed"));
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    let mut response = response;
    let mut decoder = SseDecoder::new();
    let mut stdout = std::io::stdout();
    let mut texts: BTreeMap<u64, String> = BTreeMap::new();
    let mut ends: BTreeMap<u64, (String, Value)> = BTreeMap::new();
    while let Some(chunk) = response.chunk().await.context("the stream broke")? {
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            let name = event.event.unwrap_or_default();
            let value: Value = serde_json::from_slice(&event.data)
                .context("the server sent malformed stream data")?;
            let index = value.get("index").and_then(Value::as_u64).unwrap_or(0);
            let model = value
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            match name.as_str() {
                "arena.delta" => {
                    if let Some(delta) = value.get("delta").and_then(Value::as_str) {
                        texts.entry(index).or_default().push_str(delta);
                    }
                }
                "arena.completed" => {
                    let text = value
                        .get("text")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| texts.get(&index).cloned())
                        .unwrap_or_default();
                    writeln!(stdout, "== {model} ==\n{text}\n")?;
                    stdout.flush()?;
                    ends.insert(index, (model, value));
                }
                "arena.failed" => {
                    let error = value.get("error").and_then(Value::as_str).unwrap_or("?");
                    writeln!(stdout, "== {model} ==\n(failed: {error})\n")?;
                    stdout.flush()?;
                    ends.insert(index, (model, value));
                }
                "arena.done" => {
                    for (model, end) in ends.values() {
                        eprintln!("{}", summary_line(model, end));
                    }
                    let failed = ends.values().any(|(_, end)| end.get("error").is_some());
                    return Ok(if failed {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    });
                }
                _ => {}
            }
        }
    }
    bail!("the arena stream ended without arena.done")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_name_tokens_and_times() {
        let end = json!({"usage": {"promptTokens": 2, "completionTokens": 3},
                         "ttftMs": 12, "durationMs": 40});
        assert_eq!(
            summary_line("mock/echo", &end),
            "mock/echo: 2 prompt + 3 completion tokens · ttft 12 ms · total 40 ms"
        );
        assert_eq!(
            summary_line("m", &json!({"error": "boom"})),
            "m: failed: boom"
        );
    }
}
