//! `POST /v1/embeddings`, `POST /v1/rerank` and the legacy `POST /v1/completions`: deterministic
//! answers computed from the request (see the crate docs for the exact shapes).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::body::{step_body, Step};
use crate::chat::{Behaviour, INBAND_ERROR};
use crate::guards::InFlight;
use crate::response::{error_response, json_response, json_value};
use crate::stream::DONE_EVENT;
use crate::UPSTREAM_MODEL;

/// The request as JSON, or the mock's 400.
fn parse(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(error_response(
            StatusCode::BAD_REQUEST,
            &format!("invalid JSON body: {e}"),
            "invalid_request_error",
            Value::Null,
        ))
    })
}

/// The answer of the behaviours these endpoints share with chat (`status:<code>`,
/// `inband-error`, `malformed`), before the normal one.
fn early(behaviour: &Behaviour) -> Option<Response> {
    match behaviour {
        Behaviour::Status(code, retry_after) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = error_response(
                status,
                &format!("mock upstream status {}", status.as_u16()),
                "mock_error",
                Value::from(status.as_u16()),
            );
            if let Some(secs) = retry_after {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Some(resp)
        }
        Behaviour::InbandError => Some(json_response(
            StatusCode::OK,
            Bytes::from_static(INBAND_ERROR.as_bytes()),
        )),
        Behaviour::Malformed => Some(json_response(
            StatusCode::OK,
            Bytes::from_static(b"{this is not json"),
        )),
        _ => None,
    }
}

fn behaviour_of(req: &Value) -> Behaviour {
    Behaviour::parse(req.get("model").and_then(Value::as_str).unwrap_or(""))
}

/// The texts of an `input` / `prompt`: a string, an array of strings, or token arrays (each
/// read as its ids joined by spaces).
fn texts(value: Option<&Value>) -> Vec<String> {
    let one = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(ids) => ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.iter().all(Value::is_number) => {
            vec![one(&Value::Array(items.clone()))]
        }
        Some(Value::Array(items)) => items.iter().map(one).collect(),
        _ => Vec::new(),
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// The mock's embedding of `text` at `index`: `[chars, words, index]`.
pub(crate) fn embedding_of(text: &str, index: usize) -> [f64; 3] {
    [
        text.chars().count() as f64,
        words(text) as f64,
        index as f64,
    ]
}

/// `POST /v1/embeddings`.
pub(crate) fn embeddings(body: &Bytes) -> Response {
    let req = match parse(body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Some(resp) = early(&behaviour_of(&req)) {
        return resp;
    }
    let Some(input) = req.get("input").filter(|v| !v.is_null()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "\"input\" must be provided",
            "invalid_request_error",
            Value::Null,
        );
    };
    let texts = texts(Some(input));
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embedding_of(t, i)}))
        .collect();
    let tokens: usize = texts.iter().map(|t| words(t)).sum();
    json_value(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": data,
            "model": UPSTREAM_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// `POST /v1/rerank`: each document's score is the share of the query's words it contains.
pub(crate) fn rerank(body: &Bytes) -> Response {
    let req = match parse(body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    if let Some(resp) = early(&behaviour_of(&req)) {
        return resp;
    }
    let query = req.get("query").and_then(Value::as_str).unwrap_or("");
    let documents = texts(req.get("documents").or_else(|| req.get("texts")));
    let query_words: Vec<&str> = query.split_whitespace().collect();
    let mut results: Vec<(usize, f64)> = documents
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let hits = query_words
                .iter()
                .filter(|w| d.split_whitespace().any(|x| x == **w))
                .count();
            (i, hits as f64 / query_words.len().max(1) as f64)
        })
        .collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(n) = req.get("top_n").and_then(Value::as_u64) {
        results.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    let tokens = words(query) + documents.iter().map(|d| words(d)).sum::<usize>();
    let results: Vec<Value> = results
        .into_iter()
        .map(|(index, score)| json!({"index": index, "relevance_score": score}))
        .collect();
    json_value(
        StatusCode::OK,
        &json!({
            "object": "list",
            "model": UPSTREAM_MODEL,
            "results": results,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }),
    )
}

/// One legacy completion chunk event.
fn text_event(text: &str, finish_reason: Option<&str>, usage: Option<&Value>) -> Bytes {
    let mut chunk = json!({
        "id": "cmpl-mock",
        "object": "text_completion",
        "created": 1_700_000_000u64,
        "model": UPSTREAM_MODEL,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish_reason}],
    });
    if let Some(usage) = usage {
        chunk["choices"] = json!([]);
        chunk["usage"] = usage.clone();
    }
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// `POST /v1/completions`: the text is `"echo: "` + the prompt (the first one of an array).
pub(crate) fn completions(body: &Bytes, in_flight: InFlight) -> Response {
    let req = match parse(body) {
        Ok(req) => req,
        Err(resp) => return *resp,
    };
    let behaviour = behaviour_of(&req);
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    // Streamed, only `status:` answers early (`inband-error` ends the stream with it).
    let early_answer = match (&behaviour, stream) {
        (Behaviour::Status(..), _) | (_, false) => early(&behaviour),
        _ => None,
    };
    if let Some(resp) = early_answer {
        return resp;
    }
    let prompts = texts(req.get("prompt"));
    let text = format!("echo: {}", prompts.first().map_or("", String::as_str));
    let prompt_tokens: usize = prompts.iter().map(|p| words(p)).sum();
    let completion_tokens = words(&text);
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    if !stream {
        drop(in_flight);
        return json_value(
            StatusCode::OK,
            &json!({
                "id": "cmpl-mock",
                "object": "text_completion",
                "created": 1_700_000_000u64,
                "model": UPSTREAM_MODEL,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
                "usage": usage,
            }),
        );
    }
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let mut events = Vec::new();
    let mut pieces = text.split_whitespace().peekable();
    while let Some(word) = pieces.next() {
        let piece = if pieces.peek().is_some() {
            format!("{word} ")
        } else {
            word.to_owned()
        };
        events.push(text_event(&piece, None, None));
    }
    if behaviour == Behaviour::InbandError {
        events.truncate(1);
        events.push(Bytes::from(format!("data: {INBAND_ERROR}\n\n")));
    } else {
        events.push(text_event("", Some("stop"), None));
        if include_usage {
            events.push(text_event("", None, Some(&usage)));
        }
        events.push(Bytes::from_static(DONE_EVENT.as_bytes()));
    }
    let steps = events.into_iter().map(Step::Data).collect();
    let mut resp = Response::new(step_body(steps, Some(in_flight)));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
