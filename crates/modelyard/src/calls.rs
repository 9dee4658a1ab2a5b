//! `modelyard calls` and `modelyard calls show ID`.

use crate::client::urlencode;
use anyhow::Context;
use serde_json::Value;

use crate::client::Client;

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn number(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_i64)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// A USD amount at `pointer` (a JSON number, the wire's `costUsd`) as
/// `$0.000190`: six decimals (a millionth of a dollar), more for smaller
/// non-zero amounts so they do not print as zero; `-` when null or absent.
pub(crate) fn usd(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer).and_then(Value::as_f64) {
        None => "-".to_owned(),
        Some(x) if x != 0.0 && x.abs() < 0.000_001 => format!("${x:.9}"),
        Some(x) => format!("${x:.6}"),
    }
}

/// Prints recent calls: time, model, tokens, cost, latency, status.
pub(crate) async fn list(client: &Client, limit: u32, model: Option<&str>) -> anyhow::Result<()> {
    let mut path = format!("/v1/calls?limit={limit}");
    if let Some(model) = model {
        path.push_str("&model=");
        path.push_str(&urlencode(model));
    }
    let page = client.get_json(&path).await?;
    let calls = page
        .get("data")
        .and_then(Value::as_array)
        .context("unexpected response: no data array")?;
    if calls.is_empty() {
        println!("no calls recorded yet");
        return Ok(());
    }
    println!(
        "{:<24}  {:<36}  {:>7}  {:>7}  {:>12}  {:>8}  {:>7}  {:<6}  {:<16}  ID",
        "TIME", "MODEL", "PROMPT", "COMPL", "COST", "LATENCY", "TTFT", "STATUS", "ROUTE/ATTEMPT"
    );
    for c in calls {
        println!("{}", call_line(c));
    }
    Ok(())
}

/// The route the request named and this call's attempt: `pair #2`, `#2`
/// (a retried deployment), `pair #1`, or `-` (a first attempt, no route).
fn route_attempt(c: &Value) -> String {
    let attempt = c.get("attempt").and_then(Value::as_i64).unwrap_or(1);
    match c.get("route").and_then(Value::as_str) {
        Some(route) => format!("{route} #{attempt}"),
        None if attempt > 1 => format!("#{attempt}"),
        None => "-".to_owned(),
    }
}

/// One row of `modelyard calls`.
fn call_line(c: &Value) -> String {
    let status = match text(c, "status") {
        "ok" => "ok".to_owned(),
        _ => format!("error {}", number(c, "/httpStatus")),
    };
    format!(
        "{:<24}  {:<36}  {:>7}  {:>7}  {:>12}  {:>6}ms  {:>5}ms  {:<6}  {:<16}  {}",
        text(c, "sentAt"),
        text(c, "modelId"),
        number(c, "/usage/promptTokens"),
        number(c, "/usage/completionTokens"),
        usd(c, "/costUsd"),
        number(c, "/latencyMs"),
        number(c, "/timeToFirstTokenMs"),
        status,
        route_attempt(c),
        text(c, "id"),
    )
}

/// Prints one call.
pub(crate) async fn show(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let call = client
        .get_json(&format!("/v1/calls/{}", urlencode(id)))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&call)?);
        return Ok(());
    }
    println!("call       {}", text(&call, "id"));
    println!("operation  {}", text(&call, "operation"));
    println!(
        "model      {} (provider {}, upstream {})",
        text(&call, "modelId"),
        text(&call, "provider"),
        text(&call, "upstreamModel")
    );
    println!(
        "status     {} (HTTP {})",
        text(&call, "status"),
        number(&call, "/httpStatus")
    );
    if let Some(error) = call.get("error").and_then(Value::as_str) {
        println!("error      {error}");
    }
    let attempt = number(&call, "/attempt");
    match call.get("route").and_then(Value::as_str) {
        Some(route) => println!("attempt    {attempt} (route {route})"),
        None => println!("attempt    {attempt}"),
    }
    println!("sent       {}", text(&call, "sentAt"));
    println!(
        "latency    {} ms (first token after {} ms)",
        number(&call, "/latencyMs"),
        number(&call, "/timeToFirstTokenMs")
    );
    println!(
        "usage      {} prompt + {} completion = {} tokens (cached {}, reasoning {})",
        number(&call, "/usage/promptTokens"),
        number(&call, "/usage/completionTokens"),
        number(&call, "/usage/totalTokens"),
        number(&call, "/usage/cachedPromptTokens"),
        number(&call, "/usage/reasoningTokens"),
    );
    println!(
        "cost       {} (price {}, version {})",
        usd(&call, "/costUsd"),
        text(&call, "priceSource"),
        text(&call, "priceVersion"),
    );
    println!("finish     {}", text(&call, "finishReason"));
    if let Some(messages) = call.pointer("/request/messages").and_then(Value::as_array) {
        println!("--- request messages");
        for m in messages {
            let content = m
                .get("content")
                .map(|c| {
                    c.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| c.to_string())
                })
                .unwrap_or_default();
            println!("[{}] {}", text(m, "role"), content);
        }
    }
    println!("--- response");
    println!(
        "{}",
        call.get("responseText")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    if let Some(tools) = call.get("toolCalls").filter(|t| !t.is_null()) {
        println!("--- tool calls\n{}", serde_json::to_string_pretty(tools)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{call_line, route_attempt, usd};

    #[test]
    fn costs_print_in_dollars() {
        assert_eq!(usd(&json!({"costUsd": 0.00019}), "/costUsd"), "$0.000190");
        assert_eq!(usd(&json!({"costUsd": 0}), "/costUsd"), "$0.000000");
        assert_eq!(usd(&json!({"costUsd": 4e-9}), "/costUsd"), "$0.000000004");
        assert_eq!(usd(&json!({"costUsd": null}), "/costUsd"), "-");
        let line = call_line(&json!({
            "id": "c2", "sentAt": "2026-01-31T12:00:00Z", "modelId": "b/echo",
            "status": "ok", "attempt": 1, "usage": {"promptTokens": 5}, "costUsd": 1.25
        }));
        assert!(line.contains("$1.250000"), "{line}");
    }

    #[test]
    fn rows_show_the_route_and_the_attempt() {
        assert_eq!(route_attempt(&json!({"attempt": 1, "route": null})), "-");
        assert_eq!(route_attempt(&json!({})), "-");
        assert_eq!(route_attempt(&json!({"attempt": 3, "route": null})), "#3");
        assert_eq!(
            route_attempt(&json!({"attempt": 2, "route": "pair"})),
            "pair #2"
        );
        let line = call_line(&json!({
            "id": "c1", "sentAt": "2026-01-31T12:00:00Z", "modelId": "b/echo",
            "status": "error", "httpStatus": 500, "attempt": 1, "route": "pair",
            "usage": {}, "latencyMs": 3, "timeToFirstTokenMs": null
        }));
        assert!(line.contains("b/echo"), "{line}");
        assert!(line.contains("error 500  pair #1"), "{line}");
        assert!(line.ends_with("  c1"), "{line}");
    }
}
