//! `modelyard sessions [ls]`, `modelyard sessions show ID` and
//! `modelyard usage`: clients of `/v1/llm-sessions` and `/v1/usage`.

use crate::client::urlencode;
use std::future::Future;
use std::pin::Pin;

use anyhow::Context;
use serde_json::Value;

use crate::client::Client;

/// How deep `sessions show` follows child sessions.
const MAX_DEPTH: usize = 8;

/// Options of `sessions ls` (also accepted by plain `sessions`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ListArgs {
    /// How many sessions to list.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: u32,
    /// Only sessions of this operation (`gateway`, `chat`, ...).
    #[arg(long = "op", value_name = "NAME")]
    pub operation: Option<String>,
    /// Only sessions of this conversation.
    #[arg(short = 'c', long, value_name = "CONVERSATION")]
    pub conversation: Option<String>,
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn number(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// `path?k=v&...` with the values URL-encoded; `None` values left out.
fn with_query(path: &str, params: &[(&str, Option<&str>)]) -> String {
    let query: Vec<String> = params
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", urlencode(v))))
        .collect();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", query.join("&"))
    }
}

/// Status column: `ok`, or `error` (with the HTTP status of a call).
fn status(v: &Value) -> String {
    match (
        text(v, "status"),
        v.get("httpStatus").and_then(Value::as_i64),
    ) {
        ("ok", _) => "ok".to_owned(),
        (other, Some(code)) => format!("{other} {code}"),
        (other, None) => other.to_owned(),
    }
}

/// `sessions [ls]`: newest first.
pub(crate) async fn list(client: &Client, args: &ListArgs) -> anyhow::Result<()> {
    let limit = args.limit.to_string();
    let path = with_query(
        "/v1/llm-sessions",
        &[
            ("limit", Some(&limit)),
            ("operation", args.operation.as_deref()),
            ("conversationId", args.conversation.as_deref()),
        ],
    );
    let page = client.get_json(&path).await?;
    let sessions = page
        .get("data")
        .and_then(Value::as_array)
        .context("unexpected response: no data array")?;
    if sessions.is_empty() {
        println!("no LLM sessions recorded yet");
        return Ok(());
    }
    println!(
        "{:<24}  {:<10}  {:<32}  {:>5}  {:>10}  {:>10}  {:>8}  {:<6}  ID",
        "CREATED", "OPERATION", "MODEL", "CALLS", "PROMPT", "COMPLETION", "DURATION", "STATUS"
    );
    for s in sessions {
        println!(
            "{:<24}  {:<10}  {:<32}  {:>5}  {:>10}  {:>10}  {:>6}ms  {:<6}  {}",
            text(s, "createdAt"),
            text(s, "operation"),
            text(s, "modelId"),
            number(s, "/callCount"),
            number(s, "/usage/promptTokens"),
            number(s, "/usage/completionTokens"),
            number(s, "/durationMs"),
            text(s, "status"),
            text(s, "id"),
        );
    }
    if page.get("nextBefore").is_some_and(|next| !next.is_null()) {
        println!("(older sessions exist: raise -n to see them)");
    }
    Ok(())
}

/// `sessions show ID`: the session, its calls indented under it, then its
/// child sessions (each with their calls) indented one level further.
pub(crate) async fn show(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let session = fetch(client, id).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&session)?);
        return Ok(());
    }
    println!("session    {}", text(&session, "id"));
    println!("operation  {}", text(&session, "operation"));
    if let Some(conversation) = session.get("conversationId").and_then(Value::as_str) {
        println!(
            "conversation {conversation} (turn {})",
            text(&session, "turnId")
        );
    }
    if let Some(parent) = session.get("parentSessionId").and_then(Value::as_str) {
        println!("parent     {parent}");
    }
    println!(
        "status     {}{}",
        text(&session, "status"),
        session
            .get("lastError")
            .and_then(Value::as_str)
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default()
    );
    println!(
        "time       {} → {} ({} ms)",
        text(&session, "startedAt"),
        text(&session, "finishedAt"),
        number(&session, "/durationMs")
    );
    println!("tokens     {}", usage_line(&session));
    if let Some(config) = session.get("config").filter(|c| c.is_object()) {
        println!("config     {}", config_line(config));
    }
    print_tree(client, &session, 0).await
}

/// The settings a session ran with, on one line: the model, then the
/// config and its version (`modelyard llms show ID --version N` prints
/// it), the chosen-by step, the base URL and the options.
fn config_line(config: &Value) -> String {
    let mut line = text(config, "model").to_owned();
    match (
        config.get("llmId").and_then(Value::as_str),
        config.get("version").and_then(Value::as_i64),
    ) {
        (Some(id), Some(version)) => line.push_str(&format!(" from {id} v{version}")),
        (Some(id), None) => line.push_str(&format!(" from {id}")),
        _ => {}
    }
    if let Some(source) = config.get("source").and_then(Value::as_str) {
        line.push_str(&format!(" ({source})"));
    }
    if let Some(from) = config.get("resolvedFrom").and_then(Value::as_str) {
        line.push_str(&format!(", chosen by {from}"));
    }
    if let Some(url) = config.get("baseUrl").and_then(Value::as_str) {
        line.push_str(&format!(", at {url}"));
    }
    let options: Vec<String> = config
        .get("providerOptions")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k}={v}"))
                .collect()
        })
        .unwrap_or_default();
    if !options.is_empty() {
        line.push_str(&format!(", {}", options.join(" ")));
    }
    if config.get("systemPrompt").and_then(Value::as_str).is_some() {
        line.push_str(", with a system prompt");
    }
    line
}

async fn fetch(client: &Client, id: &str) -> anyhow::Result<Value> {
    client
        .get_json(&format!("/v1/llm-sessions/{}", urlencode(id)))
        .await
}

fn usage_line(session: &Value) -> String {
    format!(
        "{} prompt + {} completion = {} total (cached {}, reasoning {}), cost {}",
        number(session, "/usage/promptTokens"),
        number(session, "/usage/completionTokens"),
        number(session, "/usage/totalTokens"),
        number(session, "/usage/cachedPromptTokens"),
        number(session, "/usage/reasoningTokens"),
        crate::calls::usd(session, "/costUsd"),
    )
}

/// Prints the calls of `session` and, recursively, its children, indented
/// by `depth`.
fn print_tree<'a>(
    client: &'a Client,
    session: &'a Value,
    depth: usize,
) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + 'a>> {
    Box::pin(async move {
        let pad = "  ".repeat(depth + 1);
        let calls = session
            .get("calls")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if calls.is_empty() {
            println!("{pad}(no calls)");
        }
        for c in &calls {
            println!(
                "{pad}call {}  {}  {}  {} in / {} out  {}  {} ms  {}",
                text(c, "id"),
                text(c, "sentAt"),
                text(c, "modelId"),
                number(c, "/usage/promptTokens"),
                number(c, "/usage/completionTokens"),
                crate::calls::usd(c, "/costUsd"),
                number(c, "/latencyMs"),
                status(c),
            );
            if let Some(error) = c.get("error").and_then(Value::as_str) {
                println!("{pad}  error: {error}");
            }
        }
        let children = session
            .get("children")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for child in &children {
            println!(
                "{pad}session {}  {}  {}  {} calls  {}  {}",
                text(child, "id"),
                text(child, "operation"),
                text(child, "modelId"),
                number(child, "/callCount"),
                text(child, "status"),
                usage_line(child),
            );
            if depth + 1 >= MAX_DEPTH {
                println!("{pad}  ...");
                continue;
            }
            let detail = fetch(client, text(child, "id")).await?;
            print_tree(client, &detail, depth + 1).await?;
        }
        Ok(())
    })
}

/// `usage --by GROUP [--from T] [--to T]`: a table of token usage per group
/// with a total line.
pub(crate) async fn usage(
    client: &Client,
    by: &str,
    from: Option<&str>,
    to: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let path = with_query(
        "/v1/usage",
        &[("groupBy", Some(by)), ("from", from), ("to", to)],
    );
    let usage = client.get_json(&path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&usage)?);
        return Ok(());
    }
    let rows = usage
        .get("data")
        .and_then(Value::as_array)
        .context("unexpected response: no data array")?;
    if rows.is_empty() {
        println!("no calls in this range");
        return Ok(());
    }
    let key_width = rows
        .iter()
        .map(|r| text(r, "key").chars().count())
        .max()
        .unwrap_or(0)
        .max(by.len())
        .max(5);
    let line = |key: &str, r: &Value| {
        println!(
            "{key:<key_width$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>11}  {:>12}",
            number(r, "/calls"),
            number(r, "/promptTokens"),
            number(r, "/completionTokens"),
            number(r, "/reasoningTokens"),
            number(r, "/cachedPromptTokens"),
            number(r, "/totalTokens"),
            crate::calls::usd(r, "/costUsd"),
        );
    };
    println!(
        "{:<key_width$}  {:>7}  {:>10}  {:>10}  {:>10}  {:>10}  {:>11}  {:>12}",
        by.to_uppercase(),
        "CALLS",
        "PROMPT",
        "COMPLETION",
        "REASONING",
        "CACHED",
        "TOTAL",
        "COST"
    );
    for r in rows {
        line(text(r, "key"), r);
    }
    line("TOTAL", &usage["total"]);
    let unpriced = usage
        .pointer("/total/unpricedCalls")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if unpriced > 0 {
        println!(
            "({unpriced} calls of unpriced cloud models have no known cost; \
             add [[prices]] for them)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_query;

    #[test]
    fn builds_query_strings() {
        assert_eq!(with_query("/v1/usage", &[("from", None)]), "/v1/usage");
        assert_eq!(
            with_query(
                "/v1/usage",
                &[
                    ("groupBy", Some("day")),
                    ("from", Some("2026-01-01T00:00:00+02:00"))
                ]
            ),
            "/v1/usage?groupBy=day&from=2026-01-01T00%3A00%3A00%2B02%3A00"
        );
    }
}
