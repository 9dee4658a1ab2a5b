//! The arena inside a conversation and what picks add up to:
//! - `modelyard conversations arena <id> -m A -m B "message"`
//!   (`POST /v1/conversations/{id}/arena`): streams and prints the run as
//!   `modelyard arena` does (side by side on a wide terminal, else each
//!   answer under a `== model ==` header with summary lines on stderr),
//!   then the run id with the command that picks (stderr). `--json` prints the non-streamed answer. Exit code 1 when
//!   any model failed.
//! - `modelyard conversations pick <id> <runId> <model>`: the chosen answer
//!   becomes the turn's; prints it.
//! - `modelyard arena stats [--since T] [--json]` (`GET /v1/arena/stats`):
//!   one line per model, most wins first.

use std::process::ExitCode;

use serde_json::{json, Value};

use crate::arena::{self, ColumnsFlag};
use crate::client::{send, urlencode, Client};

/// What to send.
pub(crate) struct Options {
    /// The model ids, 2–8.
    pub models: Vec<String>,
    /// Maximum tokens to generate per model.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Print the non-streamed JSON answer.
    pub json: bool,
}

fn request_body(options: &Options, content: &str) -> Value {
    let mut provider_options = serde_json::Map::new();
    if let Some(n) = options.max_tokens {
        provider_options.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = options.temperature {
        provider_options.insert("temperature".into(), json!(t));
    }
    let mut body = json!({
        "content": content,
        "models": options.models,
        "stream": !options.json,
    });
    if !provider_options.is_empty() {
        body["options"] = Value::Object(provider_options);
    }
    body
}

/// The lines that close a run: how to pick (or that nothing can be picked).
fn closing_lines(conversation: &str, run_id: &str, any_completed: bool) -> String {
    if any_completed {
        format!(
            "run {run_id}: pick an answer with `modelyard conversations pick {conversation} {run_id} <model>`"
        )
    } else {
        format!("run {run_id}: every model failed; the turn failed")
    }
}

/// Runs the conversation's arena and prints it ([`arena::post_and_print`],
/// as `modelyard arena` does), then how to pick.
pub(crate) async fn run(
    client: &Client,
    conversation: &str,
    options: &Options,
    content: &str,
) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/conversations/{}/arena", urlencode(conversation));
    let printed = arena::post_and_print(
        client,
        &path,
        &request_body(options, content),
        &options.models,
        options.json,
        ColumnsFlag::Auto,
    )
    .await?;
    if let Some(done) = &printed.done {
        let run_id = done.get("id").and_then(Value::as_str).unwrap_or("?");
        eprintln!(
            "{}",
            closing_lines(conversation, run_id, printed.any_completed)
        );
    }
    Ok(printed.code)
}

/// Picks `model`'s answer of run `run_id`; prints the answer.
pub(crate) async fn pick(
    client: &Client,
    conversation: &str,
    run_id: &str,
    model: &str,
) -> anyhow::Result<()> {
    let path = format!(
        "/v1/conversations/{}/arena/{}/pick",
        urlencode(conversation),
        urlencode(run_id)
    );
    let picked = send(
        client
            .http()
            .post(client.url(&path))
            .json(&json!({"model": model})),
    )
    .await?;
    let text = picked
        .pointer("/message/content")
        .and_then(Value::as_str)
        .unwrap_or("");
    println!("{text}");
    eprintln!(
        "picked {model} for turn {}",
        picked.get("turnId").and_then(Value::as_str).unwrap_or("?")
    );
    Ok(())
}

/// The stats table: one line per model, most wins first.
fn stats_table(stats: &Value) -> String {
    let models = stats
        .get("models")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if models.is_empty() {
        return "no picks yet".to_owned();
    }
    let name = |m: &Value| m["model"].as_str().unwrap_or("?").to_owned();
    let width = models
        .iter()
        .map(|m| name(m).chars().count())
        .chain(["MODEL".len()])
        .max()
        .unwrap_or(5);
    let mut out = format!(
        "{:<width$}  {:>5}  {:>11}  {:>8}",
        "MODEL", "WINS", "APPEARANCES", "WIN RATE"
    );
    for m in &models {
        let rate = m["winRate"].as_f64().unwrap_or(0.0) * 100.0;
        out.push_str(&format!(
            "\n{:<width$}  {:>5}  {:>11}  {:>7.1}%",
            name(m),
            m["wins"].as_u64().unwrap_or(0),
            m["appearances"].as_u64().unwrap_or(0),
            rate
        ));
    }
    out
}

/// Prints the per-model stats.
pub(crate) async fn stats(client: &Client, since: Option<&str>, json: bool) -> anyhow::Result<()> {
    let path = match since {
        Some(since) => format!("/v1/arena/stats?since={}", urlencode(since)),
        None => "/v1/arena/stats".to_owned(),
    };
    let stats = client.get_json(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("{}", stats_table(&stats));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stats_table_aligns_its_columns() {
        let stats = json!({"models": [
            {"model": "mock/echo", "wins": 2, "appearances": 3, "winRate": 2.0 / 3.0},
            {"model": "m", "wins": 0, "appearances": 1, "winRate": 0.0},
        ]});
        assert_eq!(
            stats_table(&stats),
            "MODEL       WINS  APPEARANCES  WIN RATE\n\
             mock/echo      2            3     66.7%\n\
             m              0            1      0.0%"
        );
        assert_eq!(stats_table(&json!({"models": []})), "no picks yet");
    }

    #[test]
    fn the_body_carries_the_options_only_when_given() {
        let options = Options {
            models: vec!["a".into(), "b".into()],
            max_tokens: None,
            temperature: Some(0.5),
            json: false,
        };
        let body = request_body(&options, "hi");
        assert_eq!(
            body,
            json!({"content": "hi", "models": ["a", "b"], "stream": true,
                   "options": {"temperature": 0.5}})
        );
    }
}
