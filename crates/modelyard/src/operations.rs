//! `modelyard conversations title ID`, `modelyard conversations compact
//! ID [--keep-last N]` and `modelyard conversations warm ID`: server-side
//! operations on a conversation.

use serde_json::{json, Value};

use crate::client::{send, Client};

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v[key].to_string())
}

/// Generates a title with the `title` operation's model; prints it and the
/// model that wrote it.
pub(crate) async fn title(client: &Client, id: &str, model: Option<&str>) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let answer = send(
        client
            .http()
            .post(client.url(&format!("/v1/conversations/{id}/title")))
            .json(&body),
    )
    .await?;
    println!("{}", text(&answer, "title"));
    eprintln!(
        "model {} [{}], session {}",
        text(&answer, "modelId"),
        text(&answer, "resolvedFrom"),
        text(&answer, "sessionId")
    );
    Ok(())
}

/// Summarizes all but the last `keep_last` messages with the `compaction`
/// operation's model; prints the summary.
pub(crate) async fn compact(
    client: &Client,
    id: &str,
    keep_last: Option<u32>,
    model: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(n) = keep_last {
        body["keepLast"] = json!(n);
    }
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    let answer = send(
        client
            .http()
            .post(client.url(&format!("/v1/conversations/{id}/compact")))
            .json(&body),
    )
    .await?;
    println!("{}", text(&answer, "summary"));
    eprintln!(
        "covers messages through seq {}; model {} [{}], session {}",
        answer["upToSeq"],
        text(&answer, "modelId"),
        text(&answer, "resolvedFrom"),
        text(&answer, "sessionId")
    );
    Ok(())
}

/// Prepares the deployment of the conversation's next turn (loads its model
/// or primes llama.cpp's prompt cache); prints what was done.
pub(crate) async fn warm(
    client: &Client,
    id: &str,
    model: Option<&str>,
    operation: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({});
    if let Some(model) = model {
        body["model"] = json!(model);
    }
    if let Some(operation) = operation {
        body["operation"] = json!(operation);
    }
    let answer = send(
        client
            .http()
            .post(client.url(&format!("/v1/conversations/{id}/warm")))
            .json(&body),
    )
    .await?;
    println!(
        "{} {} in {} ms",
        text(&answer, "action"),
        text(&answer, "deployment"),
        text(&answer, "durationMs")
    );
    eprintln!(
        "model {} [{}], session {}",
        text(&answer, "model"),
        text(&answer, "resolvedFrom"),
        text(&answer, "sessionId")
    );
    Ok(())
}
