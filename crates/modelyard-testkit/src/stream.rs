//! Streamed chat completions: the SSE events of each behaviour.

use axum::http::{header, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use crate::body::{step_body, Step};
use crate::chat::{Behaviour, ToolCallOut, Usage, INBAND_ERROR};
use crate::guards::InFlight;
use crate::UPSTREAM_MODEL;

pub(crate) const DONE_EVENT: &str = "data: [DONE]\n\n";

/// One `data: <chat.completion.chunk>\n\n` event; `delta` is already-serialised JSON.
pub(crate) fn chunk_event(delta: &str, finish_reason: Option<&str>) -> Bytes {
    const HEAD: &str = r#"data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":1700000000,"model":"mock-upstream-model","system_fingerprint":"fp_mock","choices":[{"index":0,"delta":"#;
    const TAIL: &str = "}],\"x_mock_extra\":{\"kept\":true}}\n\n";
    let mut s = String::with_capacity(HEAD.len() + delta.len() + 64 + TAIL.len());
    s.push_str(HEAD);
    s.push_str(delta);
    s.push_str(r#","logprobs":null,"finish_reason":"#);
    match finish_reason {
        Some(r) => {
            s.push('"');
            s.push_str(r);
            s.push('"');
        }
        None => s.push_str("null"),
    }
    s.push_str(TAIL);
    Bytes::from(s)
}

pub(crate) fn usage_event(usage: &Usage) -> Bytes {
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000u64,
        "model": UPSTREAM_MODEL,
        "system_fingerprint": "fp_mock",
        "choices": [],
        "usage": usage.to_json(),
        "x_mock_extra": {"kept": true},
    });
    let mut v = Vec::with_capacity(320);
    v.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut v, &body)
        .expect("a serde_json::Value written into a Vec cannot fail");
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

pub(crate) fn content_delta(key: &str, text: &str) -> String {
    // `{"<key>":<json string>}`; serde_json escapes the text.
    let mut s = String::with_capacity(text.len() + key.len() + 8);
    s.push_str("{\"");
    s.push_str(key);
    s.push_str("\":");
    s.push_str(&serde_json::to_string(text).expect("serializing a &str to JSON cannot fail"));
    s.push('}');
    s
}

pub(crate) fn stream_response(
    behaviour: &Behaviour,
    content: &str,
    tool_call: Option<&ToolCallOut>,
    usage: &Usage,
    include_usage: bool,
    in_flight: InFlight,
) -> Response {
    let role = r#"{"role":"assistant","content":""}"#;
    let word_events = || -> Vec<Bytes> {
        let mut words = content.split_whitespace().peekable();
        let mut out = Vec::new();
        while let Some(w) = words.next() {
            let piece = if words.peek().is_some() {
                format!("{w} ")
            } else {
                w.to_owned()
            };
            out.push(chunk_event(&content_delta("content", &piece), None));
        }
        out
    };
    let mut events: Vec<Bytes> = Vec::new();
    let mut tail_fail = false;
    if let Some(call) = tool_call {
        events.push(chunk_event(r#"{"role":"assistant","content":null}"#, None));
        let head = json!({"tool_calls": [{
            "index": 0,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }]});
        events.push(chunk_event(&head.to_string(), None));
        let half = call.arguments.chars().count() / 2;
        let split = call
            .arguments
            .char_indices()
            .nth(half)
            .map_or(call.arguments.len(), |(i, _)| i);
        let (first, second) = call.arguments.split_at(split);
        for piece in [first, second] {
            let delta = json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]});
            events.push(chunk_event(&delta.to_string(), None));
        }
        events.push(chunk_event("{}", Some("tool_calls")));
    } else {
        match behaviour {
            Behaviour::Drop => {
                events.push(chunk_event(role, None));
                events.extend(word_events().into_iter().take(1));
                tail_fail = true;
            }
            Behaviour::Malformed => {
                events.push(chunk_event(role, None));
                events.push(Bytes::from_static(b"data: {this is not json\n\n"));
                events.push(Bytes::from_static(DONE_EVENT.as_bytes()));
            }
            Behaviour::InbandError => {
                events.push(chunk_event(role, None));
                events.extend(word_events().into_iter().take(1));
                events.push(Bytes::from(format!("data: {INBAND_ERROR}\n\n")));
            }
            Behaviour::Tools => {
                events.push(chunk_event(r#"{"role":"assistant","content":null}"#, None));
                events.push(chunk_event(
                r#"{"tool_calls":[{"index":0,"id":"call_mock_1","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
                None,
            ));
                events.push(chunk_event(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": "}}]}"#,
                    None,
                ));
                events.push(chunk_event(
                    r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#,
                    None,
                ));
                events.push(chunk_event("{}", Some("tool_calls")));
            }
            _ => {
                events.push(chunk_event(role, None));
                if *behaviour == Behaviour::Reasoning {
                    events.push(chunk_event(r#"{"reasoning_content":"thinking"}"#, None));
                    events.push(chunk_event(r#"{"reasoning_content":"..."}"#, None));
                }
                events.extend(word_events());
                events.push(chunk_event("{}", Some("stop")));
            }
        }
    }
    if !matches!(
        behaviour,
        Behaviour::Drop | Behaviour::Malformed | Behaviour::InbandError
    ) {
        if include_usage {
            events.push(usage_event(usage));
        }
        events.push(Bytes::from_static(DONE_EVENT.as_bytes()));
    }

    let mut steps = Vec::with_capacity(events.len() * 2 + 2);
    for (i, ev) in events.into_iter().enumerate() {
        match behaviour {
            Behaviour::Slow(d)
            | Behaviour::SlowFirst(_, Some(d))
            | Behaviour::ToolCall { delay: Some(d), .. }
                if i > 0 =>
            {
                steps.push(Step::Sleep(*d))
            }
            Behaviour::Stall(d) if i == 2 => steps.push(Step::Sleep(*d)),
            _ => {}
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
