//! Chat completions: the behaviour chosen by `model`, usage, and the non-streamed answer.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::body::{step_body, Step};
use crate::guards::InFlight;
use crate::response::{error_response, json_response};
use crate::stream::stream_response;
use crate::UPSTREAM_MODEL;

pub(crate) const DEFAULT_MS: u64 = 100;
pub(crate) const INBAND_ERROR: &str =
    r#"{"error":{"message":"mock upstream failed mid-stream","type":"server_error","code":500}}"#;
pub(crate) const TOOL_ARGUMENTS: &str = r#"{"city": "Paris"}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Behaviour {
    Normal,
    Slow(Duration),
    /// `slow-first:<ms>[@<gap>]`: sleeps `<ms>` before anything, and (streamed) `<gap>` between
    /// every two SSE events.
    SlowFirst(Duration, Option<Duration>),
    Stall(Duration),
    Drop,
    Malformed,
    InbandError,
    /// Status code and `Retry-After` seconds.
    Status(u16, Option<u64>),
    Tools,
    Reasoning,
    Hang,
    /// `tool-call:<name>[*<times>][@<ms>]`: calls `name` until `times` tool results follow the
    /// last user message, then answers with the last tool result.
    ToolCall {
        name: String,
        times: usize,
        delay: Option<Duration>,
    },
}

impl Behaviour {
    pub(crate) fn parse(model: &str) -> Behaviour {
        let (name, param) = match model.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (model, None),
        };
        let ms = || {
            Duration::from_millis(
                param
                    .and_then(|p| p.trim().parse().ok())
                    .unwrap_or(DEFAULT_MS),
            )
        };
        match name {
            "slow" => Behaviour::Slow(ms()),
            "slow-first" => {
                let (first, gap) = match param.map(|p| p.split_once('@')) {
                    Some(Some((first, gap))) => (Some(first), Some(gap)),
                    _ => (param, None),
                };
                let ms_of = |p: Option<&str>| {
                    Duration::from_millis(
                        p.and_then(|p| p.trim().parse().ok()).unwrap_or(DEFAULT_MS),
                    )
                };
                Behaviour::SlowFirst(ms_of(first), gap.map(|g| ms_of(Some(g))))
            }
            "stall" => Behaviour::Stall(ms()),
            "drop" => Behaviour::Drop,
            "malformed" => Behaviour::Malformed,
            "inband-error" => Behaviour::InbandError,
            "status" => {
                let (code, retry_after) = match param.map(|p| p.split_once('@')) {
                    Some(Some((code, secs))) => (Some(code), secs.trim().parse().ok()),
                    _ => (param, None),
                };
                let code = code.and_then(|p| p.trim().parse().ok()).unwrap_or(500);
                Behaviour::Status(code, retry_after.or((code == 429).then_some(1)))
            }
            "tools" => Behaviour::Tools,
            "reasoning" => Behaviour::Reasoning,
            "hang" => Behaviour::Hang,
            "tool-call" => Behaviour::parse_tool_call(param.unwrap_or("")),
            _ => Behaviour::Normal,
        }
    }

    /// `<name>[*<times>][@<ms>]` (the `*` and `@` parts in either order).
    fn parse_tool_call(param: &str) -> Behaviour {
        let name_end = param.find(['*', '@']).unwrap_or(param.len());
        let name = match param[..name_end].trim() {
            "" => "tool",
            n => n,
        };
        // The text after `marker` up to the next `*`/`@` (or the end).
        let part = |marker: char| {
            param[name_end..].find(marker).map(|i| {
                let rest = &param[name_end + i + 1..];
                rest[..rest.find(['*', '@']).unwrap_or(rest.len())].trim()
            })
        };
        let times = part('*')
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|&n| n >= 1)
            .unwrap_or(1);
        let delay = part('@').map(|ms| Duration::from_millis(ms.parse().unwrap_or(DEFAULT_MS)));
        Behaviour::ToolCall {
            name: name.to_owned(),
            times,
            delay,
        }
    }
}

/// The one tool call a `tool-call` behaviour answers with.
pub(crate) struct ToolCallOut {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) arguments: String,
}

/// What a `tool-call:<name>*<times>` request gets: `Ok(call)` while fewer than `times` `tool`
/// messages follow the last `user` message, else `Err(answer content)`.
pub(crate) fn tool_call_turn(
    name: &str,
    times: usize,
    messages: &[Value],
) -> Result<ToolCallOut, String> {
    let is = |m: &Value, r: &str| m.get("role").and_then(Value::as_str) == Some(r);
    let last_user = messages.iter().rposition(|m| is(m, "user"));
    let after = last_user.map_or(messages, |i| &messages[i + 1..]);
    let results = after.iter().filter(|m| is(m, "tool")).count();
    if results < times {
        let question = content_text(last_user.and_then(|i| messages[i].get("content")));
        // `Value`'s `Display` is its compact JSON text and cannot fail.
        let arguments = json!({ "question": question }).to_string();
        return Ok(ToolCallOut {
            id: format!("call_mock_{}", results + 1),
            name: name.to_owned(),
            arguments,
        });
    }
    let last_tool = messages.iter().rev().find(|m| is(m, "tool"));
    Err(format!(
        "tool said: {}",
        content_text(last_tool.and_then(|m| m.get("content")))
    ))
}

/// Text of a message `content`: a string, or the `text` parts of an array concatenated.
pub(crate) fn content_text(content: Option<&Value>) -> std::borrow::Cow<'_, str> {
    match content {
        Some(Value::String(s)) => s.as_str().into(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<String>()
            .into(),
        _ => "".into(),
    }
}

pub(crate) fn count_words(content: Option<&Value>) -> usize {
    match content {
        Some(Value::String(s)) => s.split_whitespace().count(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .map(|t| t.split_whitespace().count())
            .sum(),
        _ => 0,
    }
}

pub(crate) struct Usage {
    pub(crate) prompt: usize,
    pub(crate) completion: usize,
    pub(crate) reasoning: usize,
}

impl Usage {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning},
        })
    }
}

/// `limited`: [`MockUpstream::set_enforce_context`](crate::MockUpstream::set_enforce_context)
/// is on, so an answer stops at the request's `max_tokens` words.
pub(crate) async fn chat(body: Bytes, in_flight: InFlight, limited: bool) -> Response {
    let req: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("invalid JSON body: {e}"),
                "invalid_request_error",
                Value::Null,
            )
        }
    };
    let behaviour = Behaviour::parse(req.get("model").and_then(Value::as_str).unwrap_or(""));
    let stream = req.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = req
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);

    match &behaviour {
        Behaviour::Hang => tokio::time::sleep(Duration::from_secs(3600)).await,
        Behaviour::SlowFirst(d, _) => tokio::time::sleep(*d).await,
        Behaviour::Slow(d) | Behaviour::Stall(d) if !stream => tokio::time::sleep(*d).await,
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
            return resp;
        }
        _ => {}
    }

    let messages = req.get("messages").and_then(Value::as_array);
    let last_user = messages.and_then(|m| {
        m.iter()
            .rev()
            .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    });
    let mut content = format!(
        "echo: {}",
        content_text(last_user.and_then(|m| m.get("content")))
    );
    let mut tool_call = None;
    if let Behaviour::ToolCall { name, times, .. } = &behaviour {
        match tool_call_turn(name, *times, messages.map_or(&[], Vec::as_slice)) {
            Ok(call) => tool_call = Some(call),
            Err(answer) => content = answer,
        }
    }
    let max_tokens = req
        .get("max_tokens")
        .or_else(|| req.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    if let (true, Some(max)) = (limited, max_tokens) {
        let words: Vec<&str> = content.split_whitespace().collect();
        if words.len() as u64 > max {
            content = words[..max as usize].join(" ");
        }
    }
    let prompt = messages.map_or(0, |m| m.iter().map(|m| count_words(m.get("content"))).sum());
    let usage = match (&behaviour, &tool_call) {
        (_, Some(call)) => Usage {
            prompt,
            completion: call.arguments.split_whitespace().count(),
            reasoning: 0,
        },
        (Behaviour::Tools, None) => Usage {
            prompt,
            completion: TOOL_ARGUMENTS.split_whitespace().count(),
            reasoning: 0,
        },
        (Behaviour::Reasoning, None) => Usage {
            prompt,
            completion: content.split_whitespace().count() + 2,
            reasoning: 2,
        },
        _ => Usage {
            prompt,
            completion: content.split_whitespace().count(),
            reasoning: 0,
        },
    };

    if stream {
        stream_response(
            &behaviour,
            &content,
            tool_call.as_ref(),
            &usage,
            include_usage,
            in_flight,
        )
    } else {
        drop(in_flight);
        complete_response(&behaviour, content, tool_call.as_ref(), &usage)
    }
}

pub(crate) fn complete_response(
    behaviour: &Behaviour,
    content: String,
    tool_call: Option<&ToolCallOut>,
    usage: &Usage,
) -> Response {
    let (message, finish) = if let Some(call) = tool_call {
        (
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }],
            }),
            "tool_calls",
        )
    } else {
        match behaviour {
            Behaviour::Malformed => {
                return json_response(StatusCode::OK, Bytes::from_static(b"{this is not json"))
            }
            Behaviour::InbandError => {
                return json_response(StatusCode::OK, Bytes::from_static(INBAND_ERROR.as_bytes()))
            }
            Behaviour::Tools => (
                json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": "call_mock_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS},
                    }],
                }),
                "tool_calls",
            ),
            Behaviour::Reasoning => (
                json!({"role": "assistant", "content": content, "reasoning_content": "thinking..."}),
                "stop",
            ),
            _ => (json!({"role": "assistant", "content": content}), "stop"),
        }
    };
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": 1_700_000_000u64,
        "model": UPSTREAM_MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
        "usage": usage.to_json(),
        "x_mock_extra": {"kept": true},
    });
    let bytes = Bytes::from(body.to_string());
    if *behaviour == Behaviour::Drop {
        // Headers and the first half of the JSON, then abort the connection.
        let half = bytes.slice(..bytes.len() / 2);
        let steps = vec![Step::Data(half), Step::Flush, Step::Fail];
        let mut resp = Response::new(step_body(steps, None));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    json_response(StatusCode::OK, bytes)
}
