//! Every request enters at [`handle`]: it is recorded, answered `503` while the mock is down,
//! delayed if it is a discovery request, then routed to chat or a discovery answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::chat::chat;
use crate::discovery::{
    lmstudio_models, models_listing, ollama_details, ollama_show, percent_decode, props, Route,
    OLLAMA_TIME,
};
use crate::endpoints::{completions, embeddings, rerank};
use crate::guards::{InFlight, RequestGuard};
use crate::options::{Flavour, RecordedRequest};
use crate::response::{error_response, json_response, json_value, text_response};
use crate::upstream::{lock, Shared};

pub(crate) const MAX_BODY: usize = 64 * 1024 * 1024;
pub(crate) const HEALTH_BODY: &str = r#"{"status":"ok"}"#;
pub(crate) const LOADING_BODY: &str =
    r#"{"error":{"code":503,"message":"Loading model","type":"unavailable_error"}}"#;

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let in_flight = InFlight::new(&shared);
    let mut guard = RequestGuard {
        shared: &shared,
        done: false,
    };
    let resp = dispatch(&shared, req, in_flight).await;
    guard.done = true;
    resp
}

pub(crate) async fn dispatch(shared: &Arc<Shared>, req: Request, in_flight: InFlight) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("failed to read request body: {e}"),
                "invalid_request_error",
                Value::Null,
            )
        }
    };
    if shared.record.load(Ordering::Relaxed) {
        let recorded = RecordedRequest {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
        };
        lock(&shared.log).push(recorded);
    }

    if shared.down.load(Ordering::SeqCst) {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "mock upstream is down",
            "unavailable_error",
            Value::from(503),
        );
    }

    let route = Route::parse(shared.flavour, &parts.method, parts.uri.path());
    if route.is_discovery() {
        let ms = shared.discovery_delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    let models = lock(&shared.models).clone();
    match route {
        Route::Messages => crate::messages::messages(shared, &body, in_flight).await,
        Route::CountTokens => crate::messages::count_tokens(&body),
        Route::AnthropicModels => crate::messages::models_page(parts.uri.query(), &models),
        Route::Chat | Route::Embeddings | Route::Rerank | Route::Completions => {
            if let Some(resp) = gate(shared, &parts.headers, &body) {
                return resp;
            }
            if route == Route::Chat && shared.enforce_context.load(Ordering::SeqCst) {
                if let Some(resp) = context_exceeded(&models, &body) {
                    return resp;
                }
            }
            match route {
                Route::Embeddings => embeddings(&body),
                Route::Rerank => rerank(&body),
                Route::Completions => completions(&body, in_flight),
                _ => {
                    chat(
                        body,
                        in_flight,
                        shared.enforce_context.load(Ordering::SeqCst),
                    )
                    .await
                }
            }
        }
        Route::Health => match shared.flavour {
            Flavour::LlamaCpp => {
                json_response(StatusCode::OK, Bytes::from_static(HEALTH_BODY.as_bytes()))
            }
            Flavour::LlamaSwap => text_response(StatusCode::OK, "OK"),
            // vLLM: 200 with an empty body.
            _ => Response::new(Body::empty()),
        },
        Route::Models => json_value(StatusCode::OK, &models_listing(shared.flavour, &models)),
        Route::Props => match models.first() {
            Some(m) => json_value(StatusCode::OK, &props(m)),
            None => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from_static(LOADING_BODY.as_bytes()),
            ),
        },
        Route::ApplyTemplate => {
            // The messages' text, one per line: as many words as the
            // chat answer's `prompt_tokens` counts.
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let prompt: Vec<String> = request
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|m| crate::chat::content_text(m.get("content")).into_owned())
                .collect();
            json_value(StatusCode::OK, &json!({ "prompt": prompt.join("\n") }))
        }
        Route::Tokenize => {
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let content = request.get("content").and_then(Value::as_str).unwrap_or("");
            let tokens: Vec<usize> = (0..content.split_whitespace().count()).collect();
            json_value(StatusCode::OK, &json!({ "tokens": tokens }))
        }
        Route::Running => {
            let running: Vec<Value> = models
                .iter()
                .filter(|m| m.loaded || m.state == Some("loading"))
                .map(|m| {
                    let state = if m.loaded { "ready" } else { "starting" };
                    json!({"model": m.id, "state": state, "ttl": 300})
                })
                .collect();
            json_value(StatusCode::OK, &json!({ "running": running }))
        }
        Route::UpstreamProps(id) => match models.iter().find(|m| m.id == id) {
            Some(m) if m.loaded => json_value(StatusCode::OK, &props(m)),
            Some(_) => error_response(
                StatusCode::NOT_FOUND,
                &format!(
                    "mock upstream: model '{id}' is not loaded (the mock never starts models)"
                ),
                "invalid_request_error",
                Value::Null,
            ),
            None => error_response(
                StatusCode::NOT_FOUND,
                &format!("mock upstream: model '{id}' not found"),
                "invalid_request_error",
                Value::Null,
            ),
        },
        Route::UpstreamHealth(ref id) | Route::SwapUnload(ref id) => {
            let load = matches!(route, Route::UpstreamHealth(_));
            if set_loaded(shared, id, load) {
                text_response(StatusCode::OK, "OK")
            } else {
                error_response(
                    StatusCode::NOT_FOUND,
                    &format!("mock upstream: model '{id}' not found"),
                    "invalid_request_error",
                    Value::Null,
                )
            }
        }
        Route::RouterControl(load) => {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let name = req["model"].as_str().unwrap_or_default().to_owned();
            if set_loaded(shared, &name, load) {
                json_value(StatusCode::OK, &json!({"success": true}))
            } else {
                error_response(
                    StatusCode::NOT_FOUND,
                    &format!("model not found: {name}"),
                    "not_found_error",
                    Value::Null,
                )
            }
        }
        Route::LmStudioModels => json_value(StatusCode::OK, &lmstudio_models(&models)),
        Route::RouterProps => {
            let wanted = parts
                .uri
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("model="))
                .map(percent_decode)
                .unwrap_or_default();
            match models.iter().find(|m| m.id == wanted) {
                Some(m) if m.loaded => json_value(StatusCode::OK, &props(m)),
                _ => error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("model is not loaded: {wanted}"),
                    "invalid_request_error",
                    Value::Null,
                ),
            }
        }
        Route::Generate => {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let name = req["model"].as_str().unwrap_or_default().to_owned();
            let unload = req["keep_alive"].as_i64() == Some(0)
                || req["keep_alive"].as_str().is_some_and(|k| k == "0");
            if set_loaded(shared, &name, !unload) {
                json_value(
                    StatusCode::OK,
                    &json!({"model": name, "created_at": OLLAMA_TIME, "response": "",
                            "done": true, "done_reason": if unload { "unload" } else { "load" }}),
                )
            } else {
                json_value(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("model '{name}' not found")}),
                )
            }
        }
        Route::OllamaRoot => text_response(StatusCode::OK, "Ollama is running"),
        Route::Tags => {
            let list: Vec<Value> = models
                .iter()
                .map(|m| {
                    json!({
                        "name": m.id,
                        "model": m.id,
                        "modified_at": OLLAMA_TIME,
                        "size": 1,
                        "digest": "x",
                        "details": ollama_details(),
                    })
                })
                .collect();
            json_value(StatusCode::OK, &json!({ "models": list }))
        }
        Route::Show => ollama_show(&body, &models),
        Route::Ps => {
            let list: Vec<Value> = models
                .iter()
                .filter(|m| m.loaded)
                .map(|m| {
                    let mut v = json!({
                        "name": m.id,
                        "model": m.id,
                        "size": 1,
                        "digest": "x",
                        "details": ollama_details(),
                        "expires_at": OLLAMA_TIME,
                        "size_vram": 1,
                    });
                    if let Some(ctx) = m.context_window {
                        v["context_length"] = Value::from(ctx);
                    }
                    v
                })
                .collect();
            json_value(StatusCode::OK, &json!({ "models": list }))
        }
        Route::NotFound => error_response(
            StatusCode::NOT_FOUND,
            &format!(
                "mock upstream: no route for {} {}",
                parts.method,
                parts.uri.path()
            ),
            "invalid_request_error",
            Value::Null,
        ),
    }
}

/// The model-named behaviours every model route shares (chat, embeddings, rerank, legacy
/// completions): `leak-auth` and `fail-first:<n>[@<s>]`; `None` to answer normally.
fn gate(shared: &Shared, headers: &axum::http::HeaderMap, body: &Bytes) -> Option<Response> {
    // `leak-auth`: a careless upstream that echoes the credential it got.
    let model = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("model").and_then(Value::as_str).map(str::to_owned));
    if model.as_deref() == Some("leak-auth") {
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        return Some(error_response(
            StatusCode::UNAUTHORIZED,
            &format!("invalid credentials: {auth}"),
            "authentication_error",
            Value::from(401),
        ));
    }
    // `fail-first:<n>[@<s>]`: the first `n` requests for this exact
    // model get 429 with `retry-after: <s>` (default 1), later ones
    // the normal answer.
    if let Some(param) = model.as_deref().and_then(|m| m.strip_prefix("fail-first:")) {
        let (n, secs) = match param.split_once('@') {
            Some((n, s)) => (n, s.trim().parse::<u64>().unwrap_or(1)),
            None => (param, 1),
        };
        let n: usize = n.trim().parse().unwrap_or(1);
        let seen = {
            let mut counts = lock(&shared.fail_counts);
            let count = counts.entry(model.clone().unwrap_or_default()).or_insert(0);
            *count += 1;
            *count
        };
        if seen <= n {
            let mut response = error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "mock upstream is rate limited",
                "rate_limit_error",
                Value::from(429),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return Some(response);
        }
    }
    None
}

/// llama.cpp's `400 exceed_context_size_error` when the chat request's prompt words reach
/// its model's context window ([`MockUpstream::set_enforce_context`](crate::MockUpstream::set_enforce_context)).
fn context_exceeded(models: &[crate::options::MockModel], body: &Bytes) -> Option<Response> {
    let req: Value = serde_json::from_slice(body).ok()?;
    let model = req.get("model").and_then(Value::as_str)?;
    let n_ctx = models.iter().find(|m| m.id == model)?.context_window?;
    let prompt: usize = req
        .get("messages")
        .and_then(Value::as_array)?
        .iter()
        .map(|m| crate::chat::count_words(m.get("content")))
        .sum();
    (prompt as u64 >= n_ctx).then(|| {
        json_value(
            StatusCode::BAD_REQUEST,
            &json!({"error": {
                "code": 400,
                "message": "the request exceeds the available context size, try increasing it",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": prompt,
                "n_ctx": n_ctx,
            }}),
        )
    })
}

/// Marks model `id` loaded or not; false when the mock lists no such model.
fn set_loaded(shared: &Shared, id: &str, loaded: bool) -> bool {
    let mut models = lock(&shared.models);
    let mut list = models.as_ref().clone();
    let Some(model) = list.iter_mut().find(|m| m.id == id) else {
        return false;
    };
    model.loaded = loaded;
    model.state = None;
    *models = std::sync::Arc::new(list);
    true
}
