//! `modelyard models`, `modelyard providers` and `modelyard favorites`:
//! views of `GET /v1/catalog`, `/v1/providers` and `/v1/favorites`.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::{send, Client};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn context(m: &Value) -> String {
    match m.get("contextWindow").and_then(Value::as_u64) {
        Some(n) => format!("{n} ({})", s(m, "contextWindowSource")),
        None => "unknown".to_owned(),
    }
}

fn loaded(m: &Value) -> &'static str {
    match m.get("loaded").and_then(Value::as_bool) {
        Some(true) => "loaded",
        Some(false) => "idle",
        None => "",
    }
}

fn status_line(p: &Value) -> String {
    let status = s(p, "status");
    match status {
        "offline" => format!("offline: {}", s(p, "lastError")),
        "disabled" => format!("disabled: {}", s(p, "disabledReason")),
        _ => status.to_owned(),
    }
}

/// Prints the catalog: favorites first, then one group per provider.
pub(crate) async fn models(client: &Client, all: bool, json_out: bool) -> anyhow::Result<()> {
    let path = if all {
        "/v1/catalog?includeOffline=true"
    } else {
        "/v1/catalog"
    };
    let catalog = client.get_json(path).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&catalog)?);
        return Ok(());
    }
    let favorites = catalog["favorites"].as_array().cloned().unwrap_or_default();
    let providers = catalog["providers"].as_array().cloned().unwrap_or_default();
    let width = providers
        .iter()
        .flat_map(|p| p["models"].as_array().cloned().unwrap_or_default())
        .map(|m| s(&m, "id").len())
        .max()
        .unwrap_or(10)
        .max(10);
    if !favorites.is_empty() {
        println!("★ favorites");
        for m in &favorites {
            println!(
                "  {:<width$}  {:<22}  {}",
                s(m, "id"),
                context(m),
                loaded(m)
            );
        }
        println!();
    }
    for p in &providers {
        println!("{} ({}) — {}", s(p, "name"), s(p, "kind"), status_line(p));
        let models = p["models"].as_array().cloned().unwrap_or_default();
        if models.is_empty() && s(p, "status") != "online" {
            println!("  (models hidden while not online; --all shows them)");
        }
        for m in &models {
            let star = if m["favorite"] == true { "★" } else { " " };
            let flag = if m["online"] == true {
                ""
            } else {
                " [offline]"
            };
            println!(
                "{star} {:<width$}  {:<22}  {}{flag}",
                s(m, "id"),
                context(m),
                loaded(m)
            );
        }
        println!();
    }
    Ok(())
}

/// Prints the providers: status, last error, model count, last check.
pub(crate) async fn providers(client: &Client, json_out: bool) -> anyhow::Result<()> {
    let list = client.get_json("/v1/providers").await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<16}  {:<11}  {:<9}  {:>6}  {:<24}  DETAIL",
        "PROVIDER", "KIND", "STATUS", "MODELS", "LAST CHECK"
    );
    for p in list["data"].as_array().cloned().unwrap_or_default() {
        let detail = match s(&p, "status") {
            "offline" => s(&p, "lastError").to_owned(),
            "disabled" => s(&p, "disabledReason").to_owned(),
            _ => s(&p, "baseUrl").to_owned(),
        };
        println!(
            "{:<16}  {:<11}  {:<9}  {:>6}  {:<24}  {}",
            s(&p, "name"),
            s(&p, "kind"),
            s(&p, "status"),
            p["modelCount"].as_u64().unwrap_or(0),
            s(&p, "lastCheckedAt"),
            detail
        );
    }
    Ok(())
}

async fn favorite_ids(client: &Client) -> anyhow::Result<Vec<String>> {
    let list = client.get_json("/v1/favorites").await?;
    Ok(list["data"]
        .as_array()
        .context("unexpected response: no data array")?
        .iter()
        .filter_map(|f| f.get("modelId").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// `favorites ls`.
pub(crate) async fn favorites_ls(client: &Client) -> anyhow::Result<()> {
    let list = client.get_json("/v1/favorites").await?;
    let data = list["data"].as_array().cloned().unwrap_or_default();
    if data.is_empty() {
        println!("no favorites (add one with `modelyard favorites add PROVIDER/MODEL`)");
    }
    for f in data {
        let hidden = if f["visible"] == true {
            ""
        } else {
            "  (hidden: provider not online)"
        };
        println!(
            "{:>3}. {}{hidden}",
            f["position"].as_i64().unwrap_or(0) + 1,
            s(&f, "modelId")
        );
    }
    Ok(())
}

/// `favorites add ID`.
pub(crate) async fn favorites_add(client: &Client, id: &str) -> anyhow::Result<()> {
    send(
        client
            .http()
            .post(client.url("/v1/favorites"))
            .json(&json!({"modelId": id})),
    )
    .await?;
    favorites_ls(client).await
}

/// `favorites rm ID`.
pub(crate) async fn favorites_rm(client: &Client, id: &str) -> anyhow::Result<()> {
    send(
        client
            .http()
            .delete(client.url(&format!("/v1/favorites/{id}"))),
    )
    .await?;
    favorites_ls(client).await
}

/// `favorites move ID POSITION` (1-based).
pub(crate) async fn favorites_move(
    client: &Client,
    id: &str,
    position: usize,
) -> anyhow::Result<()> {
    let mut ids = favorite_ids(client).await?;
    let Some(from) = ids.iter().position(|f| f == id) else {
        bail!("{id} is not a favorite");
    };
    if position == 0 || position > ids.len() {
        bail!("position must be between 1 and {}", ids.len());
    }
    let moved = ids.remove(from);
    ids.insert(position - 1, moved);
    send(
        client
            .http()
            .put(client.url("/v1/favorites"))
            .json(&json!({"favorites": ids})),
    )
    .await?;
    favorites_ls(client).await
}
