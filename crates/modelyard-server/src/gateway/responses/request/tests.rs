use serde_json::json;

use super::*;

fn limits() -> LimitsConfig {
    LimitsConfig::default()
}

fn parse_ok(body: Value) -> ResponsesRequest {
    parse(body.to_string().as_bytes(), &limits()).unwrap()
}

fn parse_err(body: Value) -> RequestError {
    parse(body.to_string().as_bytes(), &limits()).unwrap_err()
}

#[test]
fn a_string_input_is_one_user_message_and_fields_map_to_chat() {
    let r = parse_ok(json!({
        "model": "mock/echo", "input": "hi", "instructions": "Be brief.",
        "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 30, "user": "u1",
        "tools": [{"type": "function", "name": "get_weather", "description": "d",
                   "parameters": {"type": "object"}},
                  {"type": "web_search"}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": false, "metadata": {"k": "v"}, "store": false, "stream": true,
        "reasoning": {"effort": "low"},
    }));
    assert_eq!(r.model.as_deref(), Some("mock/echo"));
    assert_eq!(
        r.items,
        [Item::Message {
            role: Role::User,
            content: json!("hi")
        }]
    );
    assert_eq!(r.instructions.as_deref(), Some("Be brief."));
    assert_eq!(
        r.tools,
        [
            json!({"type": "function", "function": {"name": "get_weather", "description": "d",
                                                 "parameters": {"type": "object"}}})
        ]
    );
    assert_eq!(
        Value::Object(r.options),
        json!({"temperature": 0.2, "top_p": 0.9, "max_tokens": 30,
               "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
               "parallel_tool_calls": false})
    );
    assert!(!r.store);
    assert!(r.stream);
    assert_eq!(r.user.as_deref(), Some("u1"));
    assert_eq!(r.echo.tools.len(), 1, "hosted tools are left out");
    assert_eq!(r.echo.metadata, json!({"k": "v"}));
    assert!(!r.echo.parallel_tool_calls);
}

#[test]
fn defaults_store_true_and_no_tool_choice_without_tools() {
    let r = parse_ok(json!({"input": "hi", "tool_choice": "required"}));
    assert!(r.store);
    assert!(!r.stream);
    assert!(r.options.is_empty());
    assert_eq!(r.echo.tool_choice, json!("required"));
    assert_eq!(r.echo.metadata, json!({}));
}

#[test]
fn items_become_chat_messages_in_order() {
    let r = parse_ok(json!({"input": [
        {"role": "developer", "content": "dev"},
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "look"},
                     {"type": "input_image", "image_url": "data:image/png;base64,AA"}]},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call", "call_id": "c2", "name": "g", "arguments": "{\"x\":1}"},
        {"type": "reasoning", "summary": []},
        {"type": "function_call_output", "call_id": "c1", "output": "one"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "two"}]},
    ]}));
    assert_eq!(
        chat_messages(&r.items),
        [
            json!({"role": "system", "content": "dev"}),
            json!({"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}),
            json!({"role": "assistant", "content": "ab", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": "one"}),
            json!({"role": "tool", "tool_call_id": "c2", "content": "two"}),
        ]
    );
}

#[test]
fn malformed_input_names_the_item() {
    let e = parse_err(json!({"input": [{"type": "item_reference", "id": "x"}]}));
    assert_eq!(e.param, "input");
    assert!(e.message.starts_with("input[0].type"), "{}", e.message);
    let e = parse_err(json!({"input": [{"role": "robot", "content": "x"}]}));
    assert!(e.message.contains("input[0].role"), "{}", e.message);
    let e = parse_err(json!({"input": [{"role": "user", "content": 5}]}));
    assert!(e.message.contains("input[0].content"), "{}", e.message);
    let e =
        parse_err(json!({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}));
    assert!(e.message.contains("input[0].call_id"), "{}", e.message);
    assert_eq!(parse_err(json!({"model": "m"})).param, "input");
    assert_eq!(parse_err(json!({"input": 3})).param, "input");
    assert_eq!(parse_err(json!({"input": []})).param, "input");
    assert_eq!(
        parse_err(json!({"input": "x", "tools": [{"type": "function"}]})).param,
        "tools"
    );
    assert_eq!(
        parse_err(json!({"input": "x", "tool_choice": 3})).param,
        "tool_choice"
    );
    assert_eq!(
        parse_err(json!({"input": "x", "max_output_tokens": u64::MAX})).param,
        "max_output_tokens"
    );
    assert_eq!(parse(b"{not json", &limits()).unwrap_err().param, "body");
}

#[test]
fn stored_input_splits_history_system_and_the_last_user_message() {
    let r = parse_ok(json!({"input": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q2"},
    ]}));
    assert_eq!(
        stored_input(&r.items).unwrap(),
        StoredInput::Start {
            system: vec!["sys".to_owned()],
            history: vec![
                json!({"role": "user", "content": "q1"}),
                json!({"role": "assistant", "content": "a1"}),
            ],
            content: json!("q2"),
        }
    );
    let r = parse_ok(json!({"input": [
        {"type": "function_call_output", "call_id": "c1", "output": "ok"}]}));
    assert_eq!(
        stored_input(&r.items).unwrap(),
        StoredInput::Resume(vec![("c1".to_owned(), "ok".to_owned())])
    );
    let r = parse_ok(json!({"input": [
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        {"role": "user", "content": "and?"}]}));
    assert_eq!(stored_input(&r.items).unwrap_err().param, "input");
    let r = parse_ok(json!({"input": [{"role": "assistant", "content": "x"}]}));
    assert_eq!(stored_input(&r.items).unwrap_err().param, "input");
}
