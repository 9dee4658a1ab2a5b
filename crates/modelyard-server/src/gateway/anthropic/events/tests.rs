use serde_json::{json, Value};

use super::*;

/// The `(event, data)` pairs of an output, asserting each is exactly
/// `event: <name>\ndata: <json>\n\n` with `data.type == name`.
fn parse(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.is_empty() || text.ends_with("\n\n"), "{text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            let (head, data) = event.split_once('\n').unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{event}");
            (name, data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
    .into_bytes()
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: Some(11),
        completion_tokens: Some(4),
        reasoning_tokens: None,
        cached_prompt_tokens: None,
        total_tokens: Some(15),
        ..Usage::default()
    }
}

/// Runs chunks through a fresh translator: start, chunks, finish.
fn run(chunks: &[Vec<u8>]) -> (Vec<(String, Value)>, StreamTranslator) {
    let mut t = StreamTranslator::new(vec!["END".to_owned()]);
    let mut out = Vec::new();
    t.start(&mut out, "msg_1", "mock/echo");
    for c in chunks {
        t.chunk(&mut out, c).unwrap();
    }
    t.finish(&mut out, &usage());
    (parse(&out), t)
}

#[test]
fn a_text_answer_streams_in_anthropic_event_order() {
    let (events, _) = run(&[
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Hello"}), None),
        chunk(json!({"content": " world"}), None),
        chunk(json!({}), Some("stop")),
    ]);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[0].1,
        json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "mock/echo",
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}}})
    );
    assert_eq!(
        events[2].1,
        json!({"type": "content_block_start", "index": 0,
               "content_block": {"type": "text", "text": ""}})
    );
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "text_delta", "text": "Hello"})
    );
    assert_eq!(events[4].1["delta"]["text"], " world");
    assert_eq!(
        events[5].1,
        json!({"type": "content_block_stop", "index": 0})
    );
    assert_eq!(
        events[6].1,
        json!({"type": "message_delta",
               "delta": {"stop_reason": "end_turn", "stop_sequence": null},
               "usage": {"input_tokens": 11, "output_tokens": 4}})
    );
}

#[test]
fn text_then_tool_calls_stream_as_sequential_blocks_with_input_json_deltas() {
    let tool = |index: usize, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(name) = name {
            function["name"] = json!(name);
        }
        let mut call = json!({"index": index, "function": function});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        chunk(json!({"tool_calls": [call]}), None)
    };
    let (events, t) = run(&[
        chunk(json!({"content": "Let me check."}), None),
        tool(0, Some("call_a"), Some("get_weather"), ""),
        tool(0, None, None, "{\"city\": "),
        tool(0, None, None, "\"Paris\"}"),
        tool(1, Some("call_b"), Some("get_time"), "{}"),
        chunk(json!({}), Some("tool_calls")),
    ]);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(
        events[5].1,
        json!({"type": "content_block_start", "index": 1, "content_block":
               {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}})
    );
    assert_eq!(
        events[6].1,
        json!({"type": "content_block_delta", "index": 1,
               "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}})
    );
    assert_eq!(events[7].1["delta"]["partial_json"], "\"Paris\"}");
    assert_eq!(events[8].1["index"], 1);
    assert_eq!(events[9].1["index"], 2);
    assert_eq!(events[9].1["content_block"]["name"], "get_time");
    assert_eq!(events[11].1["index"], 2);
    assert_eq!(events[12].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(t.dropped_deltas, 0);
}

#[test]
fn a_tool_call_whose_name_comes_after_its_id_opens_once_named() {
    let (events, _) = run(&[
        chunk(json!({"tool_calls": [{"index": 0, "id": "call_x"}]}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"name": "f"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            None,
        ),
        chunk(json!({}), Some("stop")),
    ]);
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(starts.len(), 1);
    assert_eq!(
        starts[0]["content_block"],
        json!({"type": "tool_use", "id": "call_x", "name": "f", "input": {}})
    );
    // A tool call ends as `tool_use` even when the upstream says `stop`.
    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
}

#[test]
fn a_tool_call_without_an_id_gets_one() {
    let (events, _) = run(&[chunk(
        json!({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{}"}}]}),
        Some("tool_calls"),
    )]);
    let id = events[2].1["content_block"]["id"].as_str().unwrap();
    assert!(id.starts_with("toolu_"), "{id}");
}

#[test]
fn a_late_delta_for_a_closed_tool_block_is_left_out() {
    let (events, t) = run(&[
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ]);
    assert_eq!(t.dropped_deltas, 1);
    let starts = events
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .count();
    let stops = events
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .count();
    assert_eq!((starts, stops), (2, 2));
}

#[test]
fn stop_reasons_in_streams() {
    let last_delta = |events: &[(String, Value)]| events[events.len() - 2].1["delta"].clone();
    let (events, _) = run(&[chunk(json!({"content": "a"}), Some("length"))]);
    assert_eq!(
        last_delta(&events),
        json!({"stop_reason": "max_tokens", "stop_sequence": null})
    );
    // vLLM names the stop string that matched.
    let vllm = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                                   "stop_reason": "END"}]})
    .to_string()
    .into_bytes();
    let (events, _) = run(&[chunk(json!({"content": "a"}), None), vllm]);
    assert_eq!(
        last_delta(&events),
        json!({"stop_reason": "stop_sequence", "stop_sequence": "END"})
    );
}

#[test]
fn an_empty_answer_has_no_blocks_and_other_choices_are_ignored() {
    let other = json!({"choices": [{"index": 1, "delta": {"content": "not mine"}}]})
        .to_string()
        .into_bytes();
    let usage_only = br#"{"choices":[],"usage":{"prompt_tokens":1}}"#.to_vec();
    let (events, _) = run(&[other, usage_only, chunk(json!({}), Some("stop"))]);
    assert_eq!(
        names(&events),
        ["message_start", "ping", "message_delta", "message_stop"]
    );
}

#[test]
fn bad_chunks_are_errors_and_write_nothing() {
    let mut t = StreamTranslator::new(Vec::new());
    let mut out = Vec::new();
    assert!(t.chunk(&mut out, b"{not json").is_err());
    assert!(t.chunk(&mut out, b"\xff\xfe").is_err());
    let huge = json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 1_000_000_000usize, "function": {"name": "f", "arguments": "{}"}}]}}]});
    let e = t.chunk(&mut out, huge.to_string().as_bytes()).unwrap_err();
    assert!(e.contains("over the limit"), "{e}");
    assert!(out.is_empty());
}

#[test]
fn an_error_event_has_anthropic_shape() {
    let mut t = StreamTranslator::new(Vec::new());
    let mut out = Vec::new();
    t.error(
        &mut out,
        "api_error",
        "provider 'p' closed the stream before [DONE]",
    );
    assert_eq!(
        parse(&out),
        vec![(
            "error".to_owned(),
            json!({"type": "error", "error": {"type": "api_error",
                   "message": "provider 'p' closed the stream before [DONE]"}})
        )]
    );
}
