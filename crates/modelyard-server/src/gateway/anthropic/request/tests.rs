use serde_json::{json, Value};

use super::*;

fn limits() -> LimitsConfig {
    LimitsConfig::default()
}

fn ok(body: Value) -> Translated {
    translate(body.to_string().as_bytes(), &limits()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn err(body: Value) -> String {
    match translate(body.to_string().as_bytes(), &limits()) {
        Ok(t) => panic!("accepted {body}: {t:?}"),
        Err(e) => e.0,
    }
}

#[test]
fn every_field_maps_to_its_openai_counterpart() {
    let t = ok(json!({
        "model": "mock/echo",
        "max_tokens": 64,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
        "stop_sequences": ["END", "STOP"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "metadata": {"user_id": "u-1"},
        "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }));
    assert_eq!(t.upstream.model.as_deref(), Some("mock/echo"));
    assert!(t.upstream.stream);
    assert_eq!(t.stop_sequences, vec!["END", "STOP"]);
    assert_eq!(
        Value::Object(t.upstream.options),
        json!({"max_tokens": 64, "temperature": 0.2, "top_p": 0.9, "top_k": 40,
               "stop": ["END", "STOP"], "user": "u-1"})
    );
    assert_eq!(
        t.upstream.messages,
        vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
        ]
    );
}

#[test]
fn system_blocks_join_and_an_absent_model_or_stream_defaults() {
    let t = ok(json!({
        "max_tokens": 1,
        "system": [{"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
                   {"type": "text", "text": "Two."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    }));
    assert_eq!(t.upstream.model, None);
    assert!(!t.upstream.stream);
    assert_eq!(
        t.upstream.messages,
        vec![
            json!({"role": "system", "content": "One.\n\nTwo."}),
            // One text block is sent as a plain string.
            json!({"role": "user", "content": "Hi"}),
        ]
    );
}

#[test]
fn images_become_image_url_parts() {
    let t = ok(json!({
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
        ]}],
    }));
    assert_eq!(
        t.upstream.messages,
        vec![json!({"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
        ]})]
    );
}

#[test]
fn a_tool_round_trip_becomes_tool_calls_and_tool_messages_in_order() {
    let t = ok(json!({
        "max_tokens": 100,
        "tools": [{"name": "get_weather", "description": "Weather for a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                 "content": [{"type": "text", "text": "no data"}, {"type": "text", "text": "try later"}]},
                {"type": "text", "text": "Summarize."},
            ]},
        ],
    }));
    assert_eq!(
        t.upstream.messages,
        vec![
            json!({"role": "user", "content": "Weather in Paris and Rome?"}),
            json!({"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]}),
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}),
            json!({"role": "tool", "tool_call_id": "toolu_2", "content": "no data\ntry later"}),
            json!({"role": "user", "content": "Summarize."}),
        ]
    );
    assert_eq!(
        t.upstream.options["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    assert_eq!(t.upstream.options["tool_choice"], "auto");
    assert!(!t.upstream.options.contains_key("parallel_tool_calls"));
}

#[test]
fn an_assistant_message_with_only_tool_use_has_null_content() {
    let t = ok(json!({
        "max_tokens": 1,
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]},
        ],
    }));
    assert_eq!(
        t.upstream.messages[1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]})
    );
    assert_eq!(
        t.upstream.messages[2],
        json!({"role": "tool", "tool_call_id": "a", "content": ""})
    );
    assert_eq!(t.upstream.messages.len(), 3);
}

#[test]
fn images_in_a_tool_result_follow_in_a_user_message() {
    let t = ok(json!({
        "max_tokens": 1,
        "messages": [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image", "source": {"type": "url", "url": "https://e.com/s.png"}},
            ]},
        ]}],
    }));
    assert_eq!(
        t.upstream.messages,
        vec![
            json!({"role": "tool", "tool_call_id": "a", "content": "screenshot:"}),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://e.com/s.png"}}]}),
        ]
    );
}

#[test]
fn tool_choices() {
    let with = |choice: Value| {
        ok(json!({
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": choice,
        }))
        .upstream
        .options
    };
    assert_eq!(with(json!({"type": "any"}))["tool_choice"], "required");
    assert_eq!(with(json!({"type": "none"}))["tool_choice"], "none");
    let named = with(json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}));
    assert_eq!(
        named["tool_choice"],
        json!({"type": "function", "function": {"name": "f"}})
    );
    assert_eq!(named["parallel_tool_calls"], false);
    // Without tools there is nothing to choose.
    let t = ok(json!({
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
        "tool_choice": {"type": "any"},
    }));
    assert!(!t.upstream.options.contains_key("tool_choice"));
}

#[test]
fn server_tools_are_left_out() {
    let t = ok(json!({
        "max_tokens": 1,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
        ],
    }));
    let tools = t.upstream.options["tools"].as_array().unwrap().clone();
    assert_eq!(tools.len(), 1);
    assert_eq!(tools[0]["function"]["name"], "f");
}

#[test]
fn errors_name_the_field() {
    let base = |extra: Value| {
        let mut body = json!({"model": "m", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "x"}]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    assert_eq!(
        err(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
        "max_tokens: Field required"
    );
    assert_eq!(
        err(json!({"model": "m", "max_tokens": 5})),
        "messages: Field required"
    );
    assert!(err(base(json!({"max_tokens": "ten"}))).starts_with("max_tokens: invalid type"));
    assert_eq!(
        err(base(json!({"max_tokens": 0}))),
        "max_tokens: must be at least 1"
    );
    assert!(err(base(json!({"max_tokens": 10_000_000}))).contains("limits.max_output_tokens"));
    assert_eq!(
        err(base(json!({"messages": []}))),
        "messages: at least one message is required"
    );
    assert!(err(base(
        json!({"messages": [{"role": "system", "content": "x"}]})
    ))
    .starts_with("messages[0].role: unknown variant `system`"));
    assert!(
        err(base(json!({"messages": [{"role": "user", "content": 5}]})))
            .contains("a string or an array of content blocks")
    );
    assert_eq!(
        err(base(
            json!({"messages": [{"role": "user", "content": [{"type": "text"}]}]})
        )),
        "messages.0.content.0.text: Field required"
    );
    assert!(err(base(json!({"messages": [{"role": "user", "content": [
        {"type": "audio", "data": "x"}]}]})))
    .starts_with("messages.0.content.0.type: content block type `audio` is not supported"));
    assert_eq!(
        err(base(json!({"messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "name": "f", "input": {}}]},
        ]}))),
        "messages.1.content.0.id: Field required"
    );
    assert!(err(base(json!({"messages": [{"role": "user", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}]}]})))
    .contains("belong in assistant messages"));
    assert!(err(base(json!({"messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]})))
    .contains("image source type `file` is not supported"));
    assert_eq!(
        err(base(json!({"tools": [{"name": "f"}]}))),
        "tools.0.input_schema: Field required"
    );
    assert!(err(json!([1, 2])).starts_with("the body is not a valid Messages request"));
    assert!(translate(b"{not json", &limits()).is_err());
}

#[test]
fn caps_apply() {
    let mut limits = limits();
    limits.max_messages = 1;
    limits.max_tools = 1;
    let two = json!({"max_tokens": 1, "messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
    let e = translate(two.to_string().as_bytes(), &limits).unwrap_err();
    assert!(e.0.contains("limits.max_messages"), "{e}");
    let tools = json!({"max_tokens": 1, "messages": [{"role": "user", "content": "a"}],
        "tools": [{"name": "f", "input_schema": {}}, {"name": "g", "input_schema": {}}]});
    let e = translate(tools.to_string().as_bytes(), &limits).unwrap_err();
    assert!(e.0.contains("limits.max_tools"), "{e}");
}
