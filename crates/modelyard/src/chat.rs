//! `modelyard chat`: one prompt, the answer streamed to stdout; the model
//! and token usage go to stderr.

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use modelyard_upstream::sse::SseDecoder;
use serde_json::{json, Value};

use crate::client::{error_message, read_json, Client};

/// What to send.
pub(crate) struct ChatOptions {
    pub model: Option<String>,
    pub system: Option<String>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub stream: bool,
}

/// The prompt from the arguments, else from stdin.
pub(crate) fn read_prompt(args: &[String]) -> anyhow::Result<String> {
    if !args.is_empty() {
        return Ok(args.join(" "));
    }
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprintln!("(type the prompt, then Ctrl-D)");
    }
    let mut prompt = String::new();
    stdin
        .read_to_string(&mut prompt)
        .context("reading the prompt from stdin")?;
    let prompt = prompt.trim().to_owned();
    if prompt.is_empty() {
        bail!("empty prompt: pass it as an argument or on stdin");
    }
    Ok(prompt)
}

fn request_body(options: &ChatOptions, prompt: &str) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &options.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": prompt}));
    let mut body = json!({"messages": messages, "stream": options.stream});
    if let Some(model) = &options.model {
        body["model"] = json!(model);
    }
    if let Some(n) = options.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if let Some(t) = options.temperature {
        body["temperature"] = json!(t);
    }
    if options.stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    body
}

fn usage_line(model: Option<&str>, usage: Option<&Value>) -> String {
    let tokens = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    match (tokens("prompt_tokens"), tokens("completion_tokens")) {
        (Some(p), Some(c)) => format!(
            "[{} · {p} prompt + {c} completion tokens]",
            model.unwrap_or("?")
        ),
        _ => format!("[{}]", model.unwrap_or("?")),
    }
}

/// Sends the prompt and prints the answer.
pub(crate) async fn run(
    client: &Client,
    options: &ChatOptions,
    prompt: &str,
) -> anyhow::Result<ExitCode> {
    let response = client
        .http()
        .post(client.url("/v1/chat/completions"))
        .json(&request_body(options, prompt))
        .send()
        .await
        .context("cannot reach the Modelyard server (is `modelyard serve` running?)")?;
    if !options.stream || !response.status().is_success() {
        let value = read_json(response).await?;
        let text = value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or("");
        println!("{text}");
        eprintln!(
            "{}",
            usage_line(
                value.get("model").and_then(Value::as_str),
                value.get("usage")
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut response = response;
    let mut decoder = SseDecoder::new();
    let mut stdout = std::io::stdout();
    let mut model: Option<String> = None;
    let mut usage: Option<Value> = None;
    while let Some(chunk) = response.chunk().await.context("the stream broke")? {
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            if event.data.as_ref() == b"[DONE]" {
                writeln!(stdout)?;
                eprintln!("{}", usage_line(model.as_deref(), usage.as_ref()));
                return Ok(ExitCode::SUCCESS);
            }
            let value: Value = serde_json::from_slice(&event.data)
                .context("the server sent malformed stream data")?;
            if value.get("error").is_some() {
                writeln!(stdout)?;
                eprintln!("error: {}", error_message(&value));
                return Ok(ExitCode::FAILURE);
            }
            if model.is_none() {
                model = value
                    .get("model")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            if let Some(u) = value.get("usage").filter(|u| !u.is_null()) {
                usage = Some(u.clone());
            }
            if let Some(text) = value
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
            {
                stdout.write_all(text.as_bytes())?;
                stdout.flush()?;
            }
        }
    }
    writeln!(stdout)?;
    eprintln!("error: the stream ended without [DONE]");
    Ok(ExitCode::FAILURE)
}
