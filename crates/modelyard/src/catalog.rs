//! `modelyard models`, `modelyard providers` and `modelyard favorites`:
//! views of `GET /v1/catalog` (models, then routes with their targets'
//! status), `/v1/providers` and `/v1/favorites`.

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::client::{send, urlencode, Client};

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn context(m: &Value) -> String {
    match m.get("contextWindow").and_then(Value::as_u64) {
        Some(n) => format!("{n} ({})", s(m, "contextWindowSource")),
        None => "unknown".to_owned(),
    }
}

/// What the model's host says of it: the catalog's `state` (`loaded`,
/// `unloaded` shown as `idle`, `loading`, `failed`), else `loaded`.
fn loaded(m: &Value) -> &'static str {
    match m.get("state").and_then(Value::as_str) {
        Some("loaded") => return "loaded",
        Some("unloaded") => return "idle",
        Some("loading") => return "loading",
        Some("failed") => return "failed",
        _ => {}
    }
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

/// Prints the catalog: favorites first, then one group per provider, then
/// the routes.
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
    print!("{}", render_models(&catalog));
    Ok(())
}

fn array(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A catalog entry that is a route (favorites mix models and routes).
fn is_route(entry: &Value) -> bool {
    entry.get("targets").is_some_and(Value::is_array)
}

/// What follows a model's context window: loaded state, `[offline]`,
/// `[cooling down until <RFC 3339>]`.
fn model_flags(m: &Value) -> String {
    let mut flags = vec![loaded(m).to_owned()];
    if m["online"] == false {
        flags.push("[offline]".to_owned());
    }
    if let Some(until) = m.get("coolingDownUntil").and_then(Value::as_str) {
        flags.push(format!("[cooling down until {until}]"));
    }
    flags.retain(|f| !f.is_empty());
    flags.join(" ")
}

/// A route target's status: `available`, `cooling down until …`,
/// `offline`, `disabled` or `unknown model`.
fn target_status(t: &Value) -> String {
    match s(t, "status") {
        "cooling-down" => match t.get("coolingDownUntil").and_then(Value::as_str) {
            Some(until) => format!("cooling down until {until}"),
            None => "cooling down".to_owned(),
        },
        "unknown-model" => "unknown model".to_owned(),
        other => other.to_owned(),
    }
}

/// The context window of a route (the smallest of its targets').
fn route_context(r: &Value) -> String {
    match r.get("contextWindow").and_then(Value::as_u64) {
        Some(n) => format!("{n} (route)"),
        None => "unknown".to_owned(),
    }
}

/// The text `modelyard models` prints for a catalog document.
fn render_models(catalog: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let favorites = array(catalog, "favorites");
    let providers = array(catalog, "providers");
    let routes = array(catalog, "routes");
    let width = providers
        .iter()
        .flat_map(|p| array(p, "models"))
        .chain(routes.iter().cloned())
        .chain(routes.iter().flat_map(|r| array(r, "targets")))
        .map(|m| s(&m, "id").len())
        .max()
        .unwrap_or(10)
        .max(10);
    if !favorites.is_empty() {
        out.push_str("★ favorites\n");
        for m in &favorites {
            if is_route(m) {
                let targets: Vec<&str> = m["targets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|t| s(t, "id"))
                    .collect();
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<22}  route: {}",
                    s(m, "id"),
                    route_context(m),
                    targets.join(", ")
                );
            } else {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<22}  {}",
                    s(m, "id"),
                    context(m),
                    model_flags(m)
                );
            }
        }
        out.push('\n');
    }
    for p in &providers {
        let _ = writeln!(
            out,
            "{} ({}) — {}",
            s(p, "name"),
            s(p, "kind"),
            status_line(p)
        );
        let models = array(p, "models");
        if models.is_empty() && s(p, "status") != "online" {
            out.push_str("  (models hidden while not online; --all shows them)\n");
        }
        for m in &models {
            let star = if m["favorite"] == true { "★" } else { " " };
            let _ = writeln!(
                out,
                "{star} {:<width$}  {:<22}  {}",
                s(m, "id"),
                context(m),
                model_flags(m)
            );
        }
        out.push('\n');
    }
    if !routes.is_empty() {
        out.push_str("routes\n");
    }
    for r in &routes {
        let star = if r["favorite"] == true { "★" } else { " " };
        let fallbacks: Vec<&str> = r["fallbacks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut line = format!(
            "{star} {:<width$}  {:<22}  {}, affinity {}",
            s(r, "id"),
            route_context(r),
            s(r, "strategy"),
            s(r, "affinity")
        );
        if !fallbacks.is_empty() {
            let _ = write!(line, ", fallbacks {}", fallbacks.join(", "));
        }
        if r["online"] != true {
            line.push_str(" [no target available]");
        }
        out.push_str(&line);
        out.push('\n');
        for t in array(r, "targets") {
            let weight = match t.get("weight").and_then(Value::as_u64) {
                Some(w) if w != 1 => format!(" (weight {w})"),
                _ => String::new(),
            };
            let error = match t.get("lastError").and_then(Value::as_str) {
                Some(e) => format!(" — {e}"),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "    {:<width$}  {}{weight}{error}",
                s(&t, "id"),
                target_status(&t)
            );
        }
    }
    if !routes.is_empty() {
        out.push('\n');
    }
    out
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
        let mut detail = match s(&p, "status") {
            "offline" => s(&p, "lastError").to_owned(),
            "disabled" => s(&p, "disabledReason").to_owned(),
            _ => s(&p, "baseUrl").to_owned(),
        };
        for c in array(&p, "coolingDown") {
            detail.push_str(&format!(
                "; {} cooling down until {}",
                s(&c, "model"),
                s(&c, "coolingDownUntil")
            ));
        }
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
        // A route has no provider (and the server never calls it visible).
        let hidden = if f["provider"].is_null() {
            "  (route)"
        } else if f["visible"] == true {
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

/// `models load ID` / `models unload ID`: `POST
/// /v1/providers/{provider}/models/{model}/load` (or `…/unload`), then
/// prints what the host says now (`local/qwen3: loaded`).
pub(crate) async fn control(client: &Client, id: &str, load: bool) -> anyhow::Result<()> {
    let Some((provider, model)) = id.split_once('/') else {
        anyhow::bail!("{id:?} is not a provider/model id");
    };
    let op = if load { "load" } else { "unload" };
    let answer = send(client.http().post(client.url(&format!(
        "/v1/providers/{}/models/{}/{op}",
        urlencode(provider),
        urlencode(model)
    ))))
    .await?;
    let state = match answer.get("loaded").and_then(Value::as_bool) {
        Some(true) => "loaded",
        Some(false) => "not loaded",
        None => "state unknown",
    };
    println!("{id}: {state}");
    Ok(())
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::render_models;

    #[test]
    fn models_lists_routes_with_their_targets_and_cooldowns() {
        let catalog = json!({
            "favorites": [{
                "id": "pair", "strategy": "least-busy", "affinity": "conversation",
                "fallbacks": [], "favorite": true, "online": true, "contextWindow": 4096,
                "targets": [{"id": "a/echo"}, {"id": "b/echo"}]
            }],
            "providers": [{
                "name": "a", "kind": "llama-cpp", "status": "online",
                "models": [
                    {"id": "a/echo", "contextWindow": 4096, "contextWindowSource": "provider",
                     "loaded": true, "favorite": false, "online": true, "coolingDownUntil": null},
                    {"id": "a/flaky", "contextWindow": null, "loaded": null, "favorite": false,
                     "online": true, "coolingDownUntil": "2026-01-31T12:00:00Z"}
                ]
            }],
            "routes": [
                {"id": "pair", "strategy": "least-busy", "affinity": "conversation",
                 "fallbacks": [], "favorite": true, "online": true, "contextWindow": 4096,
                 "targets": [
                    {"id": "a/echo", "weight": 1, "status": "available", "coolingDownUntil": null,
                     "contextWindow": 4096, "lastError": null},
                    {"id": "b/echo", "weight": 2, "status": "offline", "coolingDownUntil": null,
                     "contextWindow": null, "lastError": "connection refused"}
                 ]},
                {"id": "solo", "strategy": "round-robin", "affinity": "none",
                 "fallbacks": ["pair"], "favorite": false, "online": false, "contextWindow": null,
                 "targets": [
                    {"id": "a/flaky", "weight": 1, "status": "cooling-down",
                     "coolingDownUntil": "2026-01-31T12:00:00Z", "contextWindow": null,
                     "lastError": "HTTP 500"},
                    {"id": "a/gone", "weight": 1, "status": "unknown-model",
                     "coolingDownUntil": null, "contextWindow": null, "lastError": null}
                 ]}
            ]
        });
        let text = render_models(&catalog);
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let expected = [
            "★ favorites",
            "  pair        4096 (route)            route: a/echo, b/echo",
            "",
            "a (llama-cpp) — online",
            "  a/echo      4096 (provider)         loaded",
            "  a/flaky     unknown                 [cooling down until 2026-01-31T12:00:00Z]",
            "",
            "routes",
            "★ pair        4096 (route)            least-busy, affinity conversation",
            "    a/echo      available",
            "    b/echo      offline (weight 2) — connection refused",
            "  solo        unknown                 round-robin, affinity none, fallbacks pair [no target available]",
            "    a/flaky     cooling down until 2026-01-31T12:00:00Z — HTTP 500",
            "    a/gone      unknown model",
            "",
        ];
        assert_eq!(lines, expected, "{text}");
    }
}
