use modelyard_core::Usage;
use serde_json::{json, Value};

use super::*;
use crate::gateway::responses::request::Echo;

/// The `(event, data)` pairs of an output, asserting each is exactly
/// `event: <type>\ndata: <json>\n\n` with `data.type == type`, and that
/// sequence numbers count 0, 1, 2, … without gaps.
fn parse(out: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    let events: Vec<(String, Value)> = text
        .split_terminator("\n\n")
        .map(|event| {
            let (head, data) = event.split_once('\n').unwrap();
            let name = head.strip_prefix("event: ").unwrap().to_owned();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name.as_str(), "{event}");
            (name, data)
        })
        .collect();
    for (i, (_, data)) in events.iter().enumerate() {
        assert_eq!(data["sequence_number"], i, "{data}");
    }
    events
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn response(id: &str) -> ResponseObject {
    ResponseObject::new(id.into(), 1_000, "mock/echo".into(), &Echo::default())
}

fn usage() -> Usage {
    Usage {
        prompt_tokens: Some(11),
        completion_tokens: Some(4),
        ..Usage::default()
    }
}

#[test]
fn a_text_answer_streams_in_the_order_the_sdk_expects() {
    let mut w = EventWriter::new("resp_1");
    let mut out = Vec::new();
    let mut r = response("resp_1");
    w.start(&mut out, &r);
    w.text(&mut out, "Hello");
    w.text(&mut out, "");
    w.text(&mut out, " world");
    r.output = w.output();
    r.complete(Some("stop"), &usage());
    w.finish(&mut out, &r);
    let events = parse(&out);
    assert_eq!(
        names(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0].1["response"]["status"], "in_progress");
    assert_eq!(events[0].1["response"]["output"], json!([]));
    assert_eq!(
        events[2].1["item"],
        json!({"type": "message", "id": "msg_1_0", "role": "assistant",
               "status": "in_progress", "content": []})
    );
    assert_eq!(events[4].1["delta"], "Hello");
    assert_eq!(events[4].1["item_id"], "msg_1_0");
    assert_eq!(events[6].1["text"], "Hello world");
    assert_eq!(events[7].1["part"]["text"], "Hello world");
    assert_eq!(events[8].1["item"]["status"], "completed");
    let done = &events[9].1["response"];
    assert_eq!(done["status"], "completed");
    assert_eq!(done["output"][0]["content"][0]["text"], "Hello world");
    assert_eq!(done["usage"]["input_tokens"], 11);
    assert_eq!(done["usage"]["total_tokens"], 15);
}

#[test]
fn tool_calls_stream_as_function_call_items_after_text() {
    let mut w = EventWriter::new("resp_2");
    let mut out = Vec::new();
    let mut r = response("resp_2");
    w.start(&mut out, &r);
    w.text(&mut out, "Let me check.");
    w.call_started(&mut out, "call_a", "get_weather");
    w.call_delta(&mut out, "call_a", "{\"city\":");
    w.call_delta(&mut out, "call_a", "\"Paris\"}");
    w.call_started(&mut out, "call_b", "noop");
    // A late delta for a call whose item closed is left out.
    w.call_delta(&mut out, "call_a", "x");
    r.output = w.output();
    r.complete(Some("tool_calls"), &usage());
    w.finish(&mut out, &r);
    let events = parse(&out);
    assert_eq!(w.dropped_deltas, 1);
    assert_eq!(
        names(&events)[8..],
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(
        events[8].1["item"],
        json!({"type": "function_call", "id": "fc_2_1", "call_id": "call_a",
               "name": "get_weather", "arguments": "", "status": "in_progress"})
    );
    assert_eq!(events[11].1["arguments"], "{\"city\":\"Paris\"}");
    assert_eq!(events[12].1["item"]["arguments"], "{\"city\":\"Paris\"}");
    let output = &events[16].1["response"]["output"];
    assert_eq!(output.as_array().unwrap().len(), 3);
    assert_eq!(output[1]["call_id"], "call_a");
    assert_eq!(output[2]["name"], "noop");
    assert_eq!(events[16].1["response"]["status"], "completed");
}

#[test]
fn a_failure_is_response_failed_with_the_error() {
    let mut w = EventWriter::new("resp_3");
    let mut out = Vec::new();
    let mut r = response("resp_3");
    w.start(&mut out, &r);
    w.text(&mut out, "part");
    r.output = w.output();
    r.fail(
        "provider 'mock' closed the stream".into(),
        &Usage::default(),
    );
    w.finish(&mut out, &r);
    let events = parse(&out);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "response.failed");
    assert_eq!(data["response"]["status"], "failed");
    assert_eq!(
        data["response"]["error"],
        json!({"code": "server_error", "message": "provider 'mock' closed the stream"})
    );
    assert_eq!(data["response"]["output"][0]["content"][0]["text"], "part");
}

#[test]
fn items_the_stream_missed_are_sent_at_the_end() {
    let mut w = EventWriter::new("resp_4");
    let mut out = Vec::new();
    let mut r = response("resp_4");
    w.start(&mut out, &r);
    r.output = vec![OutputItem::message(
        "msg_4_0".into(),
        "from the store".into(),
    )];
    r.complete(None, &usage());
    w.finish(&mut out, &r);
    let events = parse(&out);
    assert_eq!(
        names(&events)[2..],
        [
            "response.output_item.added",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[3].1["item"]["content"][0]["text"], "from the store");
}
