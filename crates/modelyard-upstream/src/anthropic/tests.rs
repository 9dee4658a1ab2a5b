use serde_json::json;

use super::*;
use crate::openai::{CompletionError, RequestError};

#[test]
fn the_head_reads_routing_fields_and_splices_only_model() {
    let body = br#"{ "model" : "claude-x", "max_tokens": 64, "stream": true,
        "metadata": {"user_id": "u-1"}, "tools": [{"name": "a"}, {"name": "b"}],
        "messages": [{"role": "user", "content": "hi \u00e9"}], "thinking": {"type": "enabled"} }"#;
    let head = MessagesRequestHead::parse(body).unwrap();
    assert_eq!(head.model.as_deref(), Some("claude-x"));
    assert!(head.stream);
    assert_eq!(head.max_tokens, Some(64));
    assert_eq!(head.message_count, 1);
    assert_eq!(head.tool_count, Some(2));
    assert_eq!(head.user_id.as_deref(), Some("u-1"));
    let out = head.upstream_body(body, "up/stream \"q\"");
    let expected = String::from_utf8_lossy(body).replace(r#""claude-x""#, r#""up/stream \"q\"""#);
    assert_eq!(String::from_utf8(out).unwrap(), expected);
}

#[test]
fn a_head_without_model_gets_one_and_bad_fields_are_named() {
    let body = br#"{"messages": []}"#;
    let head = MessagesRequestHead::parse(body).unwrap();
    assert_eq!(head.model, None);
    assert!(!head.stream);
    assert_eq!(
        head.upstream_body(body, "m"),
        br#"{"model":"m","messages": []}"#.to_vec()
    );
    let cases: [(&[u8], &str); 5] = [
        (br#"{"model": 3, "messages": []}"#, "model"),
        (br#"{"stream": "yes", "messages": []}"#, "stream"),
        (br#"{"max_tokens": -1, "messages": []}"#, "max_tokens"),
        (br#"{"messages": {}}"#, "messages"),
        (br#"{"messages": [], "tools": 1}"#, "tools"),
    ];
    for (body, field) in cases {
        match MessagesRequestHead::parse(body) {
            Err(RequestError::FieldType { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert_eq!(
        MessagesRequestHead::parse(br#"{"model": "m"}"#).unwrap_err(),
        RequestError::Missing("messages")
    );
    assert!(matches!(
        MessagesRequestHead::parse(b"[1]"),
        Err(RequestError::NotJson(_))
    ));
    // `metadata` of another shape is left to the upstream.
    let head = MessagesRequestHead::parse(br#"{"messages": [], "metadata": [1]}"#).unwrap();
    assert_eq!(head.user_id, None);
}

#[test]
fn a_message_keeps_its_bytes_but_model_and_is_summarized() {
    let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-up",
        "content":[{"type":"thinking","thinking":"hmm","signature":"s"},{"type":"text","text":"Hello"},
        {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
        {"type":"text","text":" there"}],
        "stop_reason":"tool_use","stop_sequence":null,
        "usage":{"input_tokens":10,"cache_read_input_tokens":4,"cache_creation_input_tokens":2,"output_tokens":7}}"#;
    let rewritten = rewrite_message(body, "route-a").unwrap();
    let expected = String::from_utf8_lossy(body).replace(r#""claude-up""#, r#""route-a""#);
    assert_eq!(String::from_utf8(rewritten.body).unwrap(), expected);
    let s = rewritten.summary;
    assert_eq!(s.text.as_deref(), Some("Hello there"));
    assert_eq!(s.reasoning.as_deref(), Some("hmm"));
    assert_eq!(s.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(
        s.tool_calls,
        Some(json!([{"id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]))
    );
    assert_eq!(s.usage.prompt_tokens, Some(16));
    assert_eq!(s.usage.cached_prompt_tokens, Some(4));
    assert_eq!(s.usage.completion_tokens, Some(7));
    assert_eq!(s.usage.total_tokens, Some(23));
}

#[test]
fn an_error_body_is_in_band_and_junk_is_not_json() {
    let body = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    match rewrite_message(body, "m") {
        Err(CompletionError::InBand(error)) => {
            assert_eq!(
                error,
                r#"{"type":"overloaded_error","message":"Overloaded"}"#
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rewrite_message(b"{nope", "m"),
        Err(CompletionError::NotJson(_))
    ));
    // No usage: nothing reported, never a guessed zero.
    let s = rewrite_message(br#"{"type":"message","content":[]}"#, "m")
        .unwrap()
        .summary;
    assert!(!s.usage.is_reported());
}

fn data(acc: &mut MessagesAccumulator, event: serde_json::Value) -> Vec<u8> {
    let text = event.to_string();
    match acc.accept(text.as_bytes(), "client-id").unwrap() {
        MessageEvent::Forward(d) | MessageEvent::Stop(d) => d.into_owned(),
        MessageEvent::Error(d, _) => d.into_owned(),
    }
}

#[test]
fn a_stream_is_accumulated_and_only_the_first_start_is_rewritten() {
    let mut acc = MessagesAccumulator::default();
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-up","content":[],"stop_reason":null,"usage":{"input_tokens":5,"cache_read_input_tokens":3,"cache_creation_input_tokens":0,"output_tokens":1}}}"#;
    match acc.accept(start.as_bytes(), "client-id").unwrap() {
        MessageEvent::Forward(d) => assert_eq!(
            String::from_utf8(d.into_owned()).unwrap(),
            start.replace("claude-up", "client-id")
        ),
        other => panic!("{other:?}"),
    }
    assert!(!acc.has_output());
    let ping = br#"{"type": "ping"}"#;
    assert_eq!(
        acc.accept(ping, "x").unwrap(),
        MessageEvent::Forward(std::borrow::Cow::Borrowed(&ping[..]))
    );
    data(
        &mut acc,
        json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"let me see"}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi "}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"there"}}),
    );
    assert!(acc.has_output());
    data(
        &mut acc,
        json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_9","name":"f","input":{}}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}),
    );
    data(
        &mut acc,
        json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"1}"}}),
    );
    // A second message_start (a confused upstream) is not rewritten again.
    let again = data(
        &mut acc,
        json!({"type":"message_start","message":{"model":"other"}}),
    );
    assert!(String::from_utf8(again).unwrap().contains("other"));
    data(
        &mut acc,
        json!({"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":12}}),
    );
    let stop = br#"{"type":"message_stop"}"#;
    assert!(matches!(
        acc.accept(stop, "x").unwrap(),
        MessageEvent::Stop(_)
    ));
    let s = acc.summary();
    assert_eq!(s.text.as_deref(), Some("Hi there"));
    assert_eq!(s.reasoning.as_deref(), Some("let me see"));
    assert_eq!(
        s.tool_calls,
        Some(
            json!([{"id":"toolu_9","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}])
        )
    );
    assert_eq!(s.finish_reason.as_deref(), Some("tool_use"));
    assert_eq!(s.usage.prompt_tokens, Some(8));
    assert_eq!(s.usage.cached_prompt_tokens, Some(3));
    assert_eq!(s.usage.completion_tokens, Some(12));
}

#[test]
fn errors_malformed_data_and_huge_indexes_are_told_apart() {
    let mut acc = MessagesAccumulator::default();
    let error = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    match acc.accept(error, "x").unwrap() {
        MessageEvent::Error(d, e) => {
            assert_eq!(d.as_ref(), &error[..]);
            assert_eq!(e, r#"{"type":"overloaded_error","message":"Overloaded"}"#);
        }
        other => panic!("{other:?}"),
    }
    assert!(acc.accept(b"{not json", "x").is_err());
    let huge = json!({"type":"content_block_delta","index":100000,"delta":{"type":"input_json_delta","partial_json":"x"}}).to_string();
    assert!(acc
        .accept(huge.as_bytes(), "x")
        .unwrap_err()
        .contains("index"));
}

#[test]
fn usage_counts_saturate_and_clamp() {
    let usage: WireUsage = serde_json::from_value(json!({
        "input_tokens": u64::MAX, "cache_read_input_tokens": 5
    }))
    .unwrap();
    let u = usage.usage();
    assert_eq!(
        u.prompt_tokens,
        Some(modelyard_core::usage::MAX_CALL_TOKENS)
    );
    assert_eq!(u.completion_tokens, None);
}
