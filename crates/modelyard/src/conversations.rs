//! `modelyard conversations ...` and `modelyard chat -c ID`: clients of
//! `/v1/conversations`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use modelyard_upstream::sse::SseDecoder;
use serde_json::{json, Value};

use crate::client::{read_json, send, Client};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// `conversations ls`.
pub(crate) async fn list(client: &Client, limit: u32) -> anyhow::Result<()> {
    let page = client
        .get_json(&format!("/v1/conversations?limit={limit}"))
        .await?;
    let data = page["data"].as_array().cloned().unwrap_or_default();
    if data.is_empty() {
        println!("no conversations (create one with `modelyard conversations new`)");
        return Ok(());
    }
    println!(
        "{:<36}  {:<24}  {:<30}  {:<30}  {:>7}  {:<7}  TITLE",
        "ID", "UPDATED", "MODEL", "LATEST MODEL", "TOKENS", "STATUS"
    );
    for c in data {
        println!(
            "{:<36}  {:<24}  {:<30}  {:<30}  {:>7}  {:<7}  {}",
            s(&c, "id"),
            s(&c, "updatedAt"),
            s(&c, "model"),
            s(&c, "latestModelId"),
            c["usage"]["totalTokens"].as_u64().unwrap_or(0),
            s(&c, "status"),
            s(&c, "title"),
        );
    }
    Ok(())
}

/// Whether an LLM config (`GET /v1/llms/{id}`) is a materialized server
/// default: the `default` preset's or `defaults.model`'s system default.
fn is_server_default(config: &Value) -> bool {
    config["source"] == "system-default"
        && matches!(
            config["presetName"].as_str(),
            Some("default" | "defaults.model")
        )
}

/// `conversations show ID`: the conversation and its messages.
pub(crate) async fn show(client: &Client, id: &str) -> anyhow::Result<()> {
    let c = client.get_json(&format!("/v1/conversations/{id}")).await?;
    println!("conversation {}  ({})", s(&c, "id"), s(&c, "status"));
    if let Some(run) = c["pendingArena"]["runId"].as_str() {
        println!(
            "arena run    {run} waits for a pick: modelyard conversations pick {} {run} <model>",
            s(&c, "id")
        );
    }
    println!("title        {}", s(&c, "title"));
    println!(
        "model        {}  (latest answer: {})",
        s(&c, "model"),
        s(&c, "latestModelId")
    );
    if let Some(llm) = c["llmId"].as_str() {
        // The server default (what a conversation created without a config
        // names) is said as such: turns follow the server's current default.
        let config = client.get_json(&format!("/v1/llms/{llm}")).await.ok();
        match config.filter(is_server_default) {
            Some(config) => println!(
                "llm config   {llm}  (the server default: {} when created; turns use the current one)",
                s(&config, "model")
            ),
            None => println!("llm config   {llm}"),
        }
    }
    if let Some(overrides) = c["llmOverrides"].as_object() {
        for (op, id) in overrides {
            println!("{:<13}{}", format!("llm[{op}]"), id.as_str().unwrap_or("-"));
        }
    }
    println!(
        "tokens       {} prompt + {} completion = {} total",
        c["usage"]["promptTokens"], c["usage"]["completionTokens"], c["usage"]["totalTokens"]
    );
    let messages = client
        .get_json(&format!("/v1/conversations/{id}/messages"))
        .await?;
    for m in messages["data"].as_array().cloned().unwrap_or_default() {
        let content = m["content"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| m["content"].to_string());
        match s(&m, "role") {
            "assistant" => println!(
                "\n[assistant · {} · {} tokens]\n{content}",
                s(&m, "modelId"),
                m["usage"]["totalTokens"]
                    .as_u64()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "?".into())
            ),
            role => println!("\n[{role}]\n{content}"),
        }
    }
    Ok(())
}

/// `conversations new`.
pub(crate) async fn create(
    client: &Client,
    title: Option<&str>,
    model: Option<&str>,
    parent: Option<&str>,
    advisor: bool,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if advisor {
        body["advisor"] = json!(true);
    }
    if let Some(title) = title {
        body["title"] = json!(title);
    }
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if let Some(parent) = parent {
        body["parentId"] = json!(parent);
    }
    let c = send(
        client
            .http()
            .post(client.url("/v1/conversations"))
            .json(&body),
    )
    .await?;
    println!("{}", s(&c, "id"));
    Ok(())
}

/// `conversations rm ID`.
pub(crate) async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    send(
        client
            .http()
            .delete(client.url(&format!("/v1/conversations/{id}"))),
    )
    .await?;
    Ok(())
}

/// `conversations model get|set|clear`.
pub(crate) async fn model(
    client: &Client,
    id: &str,
    set: Option<Option<&str>>,
) -> anyhow::Result<()> {
    let value = match set {
        None => {
            client
                .get_json(&format!("/v1/conversations/{id}/model"))
                .await?
        }
        Some(model) => {
            send(
                client
                    .http()
                    .put(client.url(&format!("/v1/conversations/{id}/model")))
                    .json(&json!({"model": model})),
            )
            .await?
        }
    };
    let model = value["model"].as_str().unwrap_or("(none)");
    if value["verified"] == false {
        println!("{model} (not verified: it does not resolve now; each turn resolves it again)");
    } else {
        println!("{model}");
    }
    Ok(())
}

/// `conversations history ID`: the model history.
pub(crate) async fn history(client: &Client, id: &str) -> anyhow::Result<()> {
    let history = client
        .get_json(&format!("/v1/conversations/{id}/model-history"))
        .await?;
    for e in history["data"].as_array().cloned().unwrap_or_default() {
        // A JSON number ignores the width: format the integer.
        let seq = e["seq"]
            .as_i64()
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into());
        match s(&e, "kind") {
            "turn" => println!(
                "{seq:>5}  {}  turn {} ({}) used {} [{}]",
                s(&e, "at"),
                s(&e, "turnId"),
                s(&e, "operation"),
                s(&e, "model"),
                s(&e, "resolvedFrom")
            ),
            kind => println!(
                "{seq:>5}  {}  {kind} {} (was {}, by {})",
                s(&e, "at"),
                s(&e, "model"),
                s(&e, "previous"),
                s(&e, "source")
            ),
        }
    }
    Ok(())
}

/// Prints a conversation's event stream. With `first_turn`, follows the
/// first turn that starts and returns when it ends (failure unless it
/// completed); otherwise runs until the stream closes.
async fn follow(mut response: reqwest::Response, first_turn: bool) -> anyhow::Result<ExitCode> {
    let mut decoder = SseDecoder::new();
    let mut stdout = std::io::stdout();
    let mut in_text = false;
    let mut turn: Option<String> = None;
    // The advisor's block on stderr: open while its output streams.
    let mut advice_line_start = true;
    while let Some(chunk) = response.chunk().await.context("the event stream broke")? {
        decoder.push(&chunk);
        while let Some(event) = decoder.next_event() {
            let kind = event.event.as_deref().unwrap_or("message");
            let data: Value = serde_json::from_slice(&event.data).unwrap_or(Value::Null);
            if kind == "text.delta" {
                stdout.write_all(s(&data, "delta").as_bytes())?;
                stdout.flush()?;
                in_text = true;
                continue;
            }
            if kind == "advisor.output" {
                // Set apart: every line of the advice starts with "│ ".
                let mut out = String::new();
                for c in s(&data, "delta").chars() {
                    if advice_line_start {
                        out.push_str("  │ ");
                    }
                    out.push(c);
                    advice_line_start = c == '\n';
                }
                eprint!("{out}");
                continue;
            }
            if matches!(
                kind,
                "reasoning.delta"
                    | "tool_call.delta"
                    | "caught-up"
                    | "tool_call.started"
                    | "arena.delta"
            ) {
                continue;
            }
            if in_text {
                writeln!(stdout)?;
                in_text = false;
            }
            let event_turn = data.get("turnId").and_then(Value::as_str);
            match kind {
                "turn.started" => {
                    if first_turn && turn.is_none() {
                        turn = event_turn.map(str::to_owned);
                    }
                    eprintln!(
                        "[turn {} · {} · {}]",
                        event_turn.unwrap_or("?"),
                        s(&data, "modelId"),
                        s(&data, "resolvedFrom")
                    );
                }
                "message.assistant" => eprintln!(
                    "[{} · {} prompt + {} completion tokens]",
                    s(&data, "modelId"),
                    data["usage"]["promptTokens"].as_u64().unwrap_or(0),
                    data["usage"]["completionTokens"].as_u64().unwrap_or(0)
                ),
                "advisor.phase" => match s(&data, "phase") {
                    "preparing_context" => eprintln!("  ╭─ advisor: preparing the context"),
                    "waiting_for_response" => eprintln!("  │  (waiting for the advisor's model)"),
                    "streaming" => advice_line_start = true,
                    "finalizing_result" => {
                        if !advice_line_start {
                            eprintln!();
                        }
                        eprintln!("  ╰─");
                    }
                    _ => {}
                },
                "message.tool" => {
                    let result: Value =
                        serde_json::from_str(s(&data, "content")).unwrap_or(Value::Null);
                    if data["isError"] == true {
                        eprintln!(
                            "  [{} → error: {}]",
                            s(&data, "name"),
                            result["error"].as_str().unwrap_or(s(&data, "content"))
                        );
                    } else if result["type"] == "advice" {
                        eprintln!(
                            "  [advice from {} · {} prompt + {} completion tokens · {} uses left]",
                            s(&data, "modelId"),
                            data["usage"]["promptTokens"].as_u64().unwrap_or(0),
                            data["usage"]["completionTokens"].as_u64().unwrap_or(0),
                            result["remainingUses"]
                        );
                    }
                }
                "turn.requires_action" => {
                    let calls: Vec<String> = data["toolCalls"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .map(|c| format!("{} {}({})", s(c, "id"), s(c, "name"), s(c, "arguments")))
                        .collect();
                    eprintln!(
                        "the turn waits for client tool results ({}); answer with POST \
                         /v1/conversations/{{id}}/turns/{}/tool-results",
                        calls.join(", "),
                        event_turn.unwrap_or("?")
                    );
                }
                "turn.failed" => eprintln!("error: {}", s(&data, "error")),
                "turn.cancelled" => eprintln!("(turn cancelled)"),
                "turn.interrupted" => eprintln!("(turn interrupted)"),
                _ if !first_turn => eprintln!("[{}] {kind}", data["seq"]),
                _ => {}
            }
            if first_turn && turn.is_some() && event_turn == turn.as_deref() {
                match kind {
                    "turn.completed" => return Ok(ExitCode::SUCCESS),
                    "turn.failed"
                    | "turn.cancelled"
                    | "turn.interrupted"
                    | "turn.requires_action" => return Ok(ExitCode::FAILURE),
                    _ => {}
                }
            }
        }
    }
    if first_turn {
        bail!("the event stream ended before the turn did");
    }
    Ok(ExitCode::SUCCESS)
}

/// `conversations watch ID`: replay, then live events until interrupted.
pub(crate) async fn watch(client: &Client, id: &str) -> anyhow::Result<ExitCode> {
    let response = client
        .http()
        .get(client.url(&format!("/v1/conversations/{id}/events")))
        .send()
        .await
        .context("cannot reach the Modelyard server")?;
    if !response.status().is_success() {
        read_json(response).await?;
        bail!("cannot watch {id}");
    }
    follow(response, false).await
}

/// `chat -c ID`: one turn in a conversation, streamed. `model` overrides
/// (and, for chat, persists) the conversation's model.
pub(crate) async fn turn(
    client: &Client,
    id: &str,
    model: Option<&str>,
    prompt: &str,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({"content": prompt, "stream": true});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let response = client
        .http()
        .post(client.url(&format!("/v1/conversations/{id}/turns")))
        .json(&body)
        .send()
        .await
        .context("cannot reach the Modelyard server")?;
    if !response.status().is_success() {
        read_json(response).await?;
        bail!("the turn did not start");
    }
    follow(response, true).await
}

/// `conversations advisor ID [on|off]`: shows or sets whether turns offer
/// the advisor tool, and which model it would consult.
pub(crate) async fn advisor(client: &Client, id: &str, set: Option<bool>) -> anyhow::Result<()> {
    let url = client.url(&format!("/v1/conversations/{id}/settings"));
    let settings = match set {
        Some(on) => send(client.http().patch(url).json(&json!({"advisor": on}))).await?,
        None => send(client.http().get(url)).await?,
    };
    let state = if settings["advisor"] == true {
        "on"
    } else {
        "off"
    };
    match settings["advisorModel"].as_str() {
        Some(model) => println!("advisor {state} · model {model}"),
        None => println!(
            "advisor {state} · no model: {}",
            s(&settings, "advisorError")
        ),
    }
    Ok(())
}
