//! Anthropic's Messages API as the mock serves it (every flavour, like llama-server):
//! `POST /v1/messages`
//! streamed and not, `POST /v1/messages/count_tokens`, and the paged `GET /v1/models` of the
//! Anthropic flavour. See the crate docs for the table.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::body::{step_body, Step};
use crate::chat::{Behaviour, TOOL_ARGUMENTS};
use crate::guards::InFlight;
use crate::options::MockModel;
use crate::response::json_value;
use crate::upstream::{lock, Shared};

/// `cache_read_input_tokens` of every message the mock answers.
pub const CACHE_READ_TOKENS: u64 = 3;
/// `cache_creation_input_tokens` of every message the mock answers.
pub const CACHE_CREATION_TOKENS: u64 = 1;
/// Models per page of the Anthropic flavour's `GET /v1/models`, whatever `limit` asks (so
/// paging is exercised with a few models).
pub const ANTHROPIC_PAGE_SIZE: usize = 2;

/// Anthropic's error type for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    }
}

/// `{"type":"error","error":{"type","message"}}` with `status`.
pub(crate) fn anthropic_error(status: StatusCode, message: &str) -> Response {
    json_value(
        status,
        &json!({"type": "error", "error": {"type": error_type(status.as_u16()), "message": message}}),
    )
}

/// The text of an Anthropic `content` (a string, or its `text` blocks concatenated).
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Words of `system` and of every message's text: the mock's `input_tokens`.
fn input_words(req: &Value) -> u64 {
    let mut words = text_of(req.get("system")).split_whitespace().count();
    for m in req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        words += text_of(m.get("content")).split_whitespace().count();
    }
    words as u64
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `POST /v1/messages/count_tokens`: `{"input_tokens": <words>}`; a `status:<code>` model
/// gets that status in Anthropic's error shape.
pub(crate) fn count_tokens(body: &[u8]) -> Response {
    let req = match serde_json::from_slice::<Value>(body) {
        Ok(req) => req,
        Err(e) => {
            return anthropic_error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"))
        }
    };
    let model = req.get("model").and_then(Value::as_str).unwrap_or("");
    if let Behaviour::Status(code, _) = Behaviour::parse(model) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return anthropic_error(status, &format!("mock upstream status {}", status.as_u16()));
    }
    json_value(StatusCode::OK, &json!({"input_tokens": input_words(&req)}))
}

/// `POST /v1/messages` (behaviours in the crate docs).
pub(crate) async fn messages(shared: &Shared, body: &[u8], in_flight: InFlight) -> Response {
    let req: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            return anthropic_error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}"))
        }
    };
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    if let Some(param) = model.strip_prefix("fail-first:") {
        let n: usize = param
            .split('@')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1);
        let seen = {
            let mut counts = lock(&shared.fail_counts);
            let count = counts.entry(model.clone()).or_insert(0);
            *count += 1;
            *count
        };
        if seen <= n {
            let mut resp = anthropic_error(
                StatusCode::TOO_MANY_REQUESTS,
                "mock upstream is rate limited",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(1));
            return resp;
        }
    }
    let behaviour = Behaviour::parse(&model);
    match &behaviour {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::Slow(d) if !stream => tokio::time::sleep(*d).await,
        Behaviour::Status(code, retry_after) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp =
                anthropic_error(status, &format!("mock upstream status {}", status.as_u16()));
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            return resp;
        }
        _ => {}
    }
    let last_user = req.get("messages").and_then(Value::as_array).and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    });
    let text = format!(
        "echo: {}",
        text_of(last_user.and_then(|m| m.get("content")))
    );
    let input = input_words(&req);
    let tools = behaviour == Behaviour::Tools;
    let thinking = behaviour == Behaviour::Reasoning;
    let output = if tools {
        TOOL_ARGUMENTS.split_whitespace().count()
    } else {
        text.split_whitespace().count()
    } as u64;
    let usage = json!({
        "input_tokens": input,
        "cache_creation_input_tokens": CACHE_CREATION_TOKENS,
        "cache_read_input_tokens": CACHE_READ_TOKENS,
        "output_tokens": output,
    });
    let stop_reason = if tools { "tool_use" } else { "end_turn" };
    let tool_block = json!({"type": "tool_use", "id": "toolu_mock_1", "name": "get_weather",
                            "input": {"city": "Paris"}});

    if !stream {
        drop(in_flight);
        let content = if tools {
            json!([tool_block])
        } else if thinking {
            json!([{"type": "thinking", "thinking": "thinking...", "signature": "sig"},
                   {"type": "text", "text": text}])
        } else {
            json!([{"type": "text", "text": text}])
        };
        if behaviour == Behaviour::InbandError {
            return json_value(
                StatusCode::OK,
                &json!({"type": "error", "error": {"type": "overloaded_error", "message": "mock upstream is overloaded"}}),
            );
        }
        let message = json!({
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason, "stop_sequence": null,
            "usage": usage,
        });
        return json_value(StatusCode::OK, &message);
    }

    let mut events = Vec::new();
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    events.push(event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage}}),
    ));
    events.push(event("ping", &json!({"type": "ping"})));
    let mut index = 0;
    if thinking {
        events.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "thinking", "thinking": ""}}),
        ));
        events.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "thinking..."}}),
        ));
        events.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    if tools {
        let mut start = tool_block.clone();
        start["input"] = json!({});
        events.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for piece in ["{\"city\": ", "\"Paris\"}"] {
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
    } else {
        events.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        ));
        let mut words = text.split_whitespace().peekable();
        while let Some(w) = words.next() {
            let piece = if words.peek().is_some() {
                format!("{w} ")
            } else {
                w.to_owned()
            };
            events.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
    }
    let mut tail_fail = false;
    match behaviour {
        Behaviour::Drop => {
            events.truncate(4);
            tail_fail = true;
        }
        Behaviour::InbandError => {
            events.truncate(4);
            events.push(event("error", &json!({"type": "error", "error": {"type": "overloaded_error", "message": "mock upstream is overloaded"}})));
        }
        _ => {
            events.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            ));
            events.push(event(
                "message_delta",
                &json!({"type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": null},
                "usage": {"output_tokens": output}}),
            ));
            events.push(event("message_stop", &json!({"type": "message_stop"})));
        }
    }
    let mut steps = Vec::with_capacity(events.len() * 2 + 2);
    for (i, ev) in events.into_iter().enumerate() {
        if let Behaviour::Slow(d) = behaviour {
            if i > 0 {
                steps.push(Step::Sleep(d));
            }
        }
        steps.push(Step::Data(ev));
    }
    if tail_fail {
        steps.push(Step::Flush);
        steps.push(Step::Fail);
    }
    let mut resp = Response::new(step_body(steps, Some(in_flight)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// The Anthropic flavour's `GET /v1/models?limit=&after_id=`: pages of at most
/// [`ANTHROPIC_PAGE_SIZE`] models (or `limit` when smaller), `has_more`, `first_id`, `last_id`.
pub(crate) fn models_page(query: Option<&str>, models: &[MockModel]) -> Response {
    let mut limit = ANTHROPIC_PAGE_SIZE;
    let mut after: Option<String> = None;
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("limit", n)) => {
                limit = n
                    .parse::<usize>()
                    .map_or(limit, |n| n.clamp(1, ANTHROPIC_PAGE_SIZE))
            }
            Some(("after_id", id)) => after = Some(crate::discovery::percent_decode(id)),
            _ => {}
        }
    }
    let start = match &after {
        Some(id) => match models.iter().position(|m| &m.id == id) {
            Some(i) => i + 1,
            None => {
                return anthropic_error(StatusCode::BAD_REQUEST, &format!("unknown after_id {id}"))
            }
        },
        None => 0,
    };
    let page: Vec<&MockModel> = models.iter().skip(start).take(limit).collect();
    let data: Vec<Value> = page
        .iter()
        .map(|m| {
            json!({"type": "model", "id": m.id, "display_name": format!("Display {}", m.id),
                   "created_at": "2025-01-01T00:00:00Z"})
        })
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "data": data,
            "has_more": start + page.len() < models.len(),
            "first_id": page.first().map(|m| m.id.clone()),
            "last_id": page.last().map(|m| m.id.clone()),
        }),
    )
}
