//! `modelyard llms ...` and `modelyard conversations set-llm`: clients of
//! `/v1/llms` and of a conversation's `llmId` / `llmOverrides`.

use serde_json::{json, Map, Value};

use crate::client::{send, urlencode, Client};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

/// What `create` and `edit` may set.
#[derive(Debug, Default)]
pub(crate) struct LlmArgs {
    /// Model id.
    pub model: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// System prompt.
    pub system: Option<String>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Max tokens.
    pub max_tokens: Option<u32>,
}

impl LlmArgs {
    fn body(&self) -> Value {
        let mut body = Map::new();
        if let Some(model) = &self.model {
            body.insert("model".into(), json!(model));
        }
        if let Some(name) = &self.name {
            body.insert("displayName".into(), json!(name));
        }
        if let Some(system) = &self.system {
            body.insert("systemPrompt".into(), json!(system));
        }
        let mut options = Map::new();
        if let Some(t) = self.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(n) = self.max_tokens {
            options.insert("maxTokens".into(), json!(n));
        }
        if !options.is_empty() {
            body.insert("providerOptions".into(), Value::Object(options));
        }
        Value::Object(body)
    }
}

fn options_text(llm: &Value) -> String {
    let names = [
        ("temperature", "temperature"),
        ("topP", "top_p"),
        ("maxTokens", "max_tokens"),
        ("reasoningEffort", "reasoning_effort"),
        ("stop", "stop"),
        ("seed", "seed"),
        ("extra", "extra"),
    ];
    let parts: Vec<String> = names
        .iter()
        .filter_map(|(key, label)| {
            let v = &llm["providerOptions"][*key];
            (!v.is_null()).then(|| format!("{label}={v}"))
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

fn source_text(llm: &Value) -> String {
    match llm["presetVersion"].as_i64() {
        Some(v) => format!("system:{} v{v}", s(llm, "presetName")),
        None => s(llm, "source").to_owned(),
    }
}

/// `llms ls`.
pub(crate) async fn list(client: &Client, limit: u32) -> anyhow::Result<()> {
    let page = client.get_json(&format!("/v1/llms?limit={limit}")).await?;
    let data = page["data"].as_array().cloned().unwrap_or_default();
    if data.is_empty() {
        println!("no LLM configs (create one with `modelyard llms create --model ID`)");
        return Ok(());
    }
    let rows: Vec<[String; 5]> = data
        .iter()
        .map(|llm| {
            [
                s(llm, "id").to_owned(),
                source_text(llm),
                s(llm, "model").to_owned(),
                s(llm, "displayName").to_owned(),
                options_text(llm),
            ]
        })
        .collect();
    // Each column as wide as its longest cell (at least its header).
    let width = |i: usize, header: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2, w3) = (
        width(0, "ID"),
        width(1, "SOURCE"),
        width(2, "MODEL"),
        width(3, "NAME"),
    );
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  OPTIONS",
        "ID", "SOURCE", "MODEL", "NAME"
    );
    for [id, source, model, name, options] in rows {
        println!("{id:<w0$}  {source:<w1$}  {model:<w2$}  {name:<w3$}  {options}");
    }
    Ok(())
}

/// `llms show ID [--version N]`.
pub(crate) async fn show(
    client: &Client,
    id: &str,
    version: Option<i64>,
    raw: bool,
) -> anyhow::Result<()> {
    let path = match version {
        Some(n) => format!("/v1/llms/{}?version={n}", urlencode(id)),
        None => format!("/v1/llms/{}", urlencode(id)),
    };
    let llm = client.get_json(&path).await?;
    if raw {
        println!("{}", serde_json::to_string_pretty(&llm)?);
        return Ok(());
    }
    print_llm(&llm);
    Ok(())
}

/// `llms versions ID`: one line per version, newest first.
pub(crate) async fn versions(client: &Client, id: &str, limit: u32) -> anyhow::Result<()> {
    let page = client
        .get_json(&format!(
            "/v1/llms/{}/versions?limit={limit}",
            urlencode(id)
        ))
        .await?;
    let rows: Vec<[String; 4]> = page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|v| {
            let config = &v["config"];
            [
                v["version"].as_i64().map_or("-".into(), |n| n.to_string()),
                s(v, "createdAt").to_owned(),
                s(config, "model").to_owned(),
                options_text(config),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no versions");
        return Ok(());
    }
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0).max(7);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0).max(5);
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  OPTIONS",
        "VERSION", "WRITTEN", "MODEL"
    );
    for [version, at, model, options] in rows {
        println!("{version:<w0$}  {at:<w1$}  {model:<w2$}  {options}");
    }
    Ok(())
}

fn print_llm(llm: &Value) {
    println!("LLM config {}", s(llm, "id"));
    if let Some(version) = llm["version"].as_i64() {
        println!("version   {version}");
    }
    println!("name      {}", s(llm, "displayName"));
    println!("source    {}", source_text(llm));
    println!("model     {}", s(llm, "model"));
    println!("options   {}", options_text(llm));
    if let Some(url) = llm["baseUrl"].as_str() {
        println!("base URL  {url}");
    }
    println!("updated   {}", s(llm, "updatedAt"));
    if let Some(prompt) = llm["systemPrompt"].as_str() {
        println!("system prompt:\n{prompt}");
    }
}

/// `llms create`: prints the new id.
pub(crate) async fn create(client: &Client, args: &LlmArgs) -> anyhow::Result<()> {
    let llm = send(
        client
            .http()
            .post(client.url("/v1/llms"))
            .json(&args.body()),
    )
    .await?;
    println!("{}", s(&llm, "id"));
    Ok(())
}

/// `llms edit ID`.
pub(crate) async fn edit(client: &Client, id: &str, args: &LlmArgs) -> anyhow::Result<()> {
    let body = args.body();
    if body.as_object().is_some_and(Map::is_empty) {
        anyhow::bail!(
            "nothing to change: pass --model, --name, --system, --temperature or --max-tokens"
        );
    }
    let llm = send(
        client
            .http()
            .patch(client.url(&format!("/v1/llms/{id}")))
            .json(&body),
    )
    .await?;
    print_llm(&llm);
    Ok(())
}

/// `llms rm ID`.
pub(crate) async fn remove(client: &Client, id: &str) -> anyhow::Result<()> {
    send(client.http().delete(client.url(&format!("/v1/llms/{id}")))).await?;
    Ok(())
}

/// `llms copy ID`: prints the new id.
pub(crate) async fn copy(client: &Client, id: &str) -> anyhow::Result<()> {
    let llm = send(
        client
            .http()
            .post(client.url(&format!("/v1/llms/{id}/copy")))
            .json(&json!({})),
    )
    .await?;
    println!("{}", s(&llm, "id"));
    Ok(())
}

/// `conversations set-llm ID [--op NAME] CONFIG_ID`: the conversation's
/// default config, or its config for one operation; `none` clears.
pub(crate) async fn set_conversation_llm(
    client: &Client,
    conversation: &str,
    operation: Option<&str>,
    config: &str,
) -> anyhow::Result<()> {
    let value = if config == "none" {
        Value::Null
    } else {
        json!(config)
    };
    let body = match operation {
        None => json!({"llmId": value}),
        Some(op) => json!({"llmOverrides": {op: value}}),
    };
    let c = send(
        client
            .http()
            .patch(client.url(&format!("/v1/conversations/{conversation}")))
            .json(&body),
    )
    .await?;
    println!(
        "{:<13}{}",
        "llm config",
        c["llmId"].as_str().unwrap_or("(none)")
    );
    if let Some(overrides) = c["llmOverrides"].as_object() {
        for (op, id) in overrides {
            println!("{:<13}{}", format!("llm[{op}]"), id.as_str().unwrap_or("-"));
        }
    }
    Ok(())
}
