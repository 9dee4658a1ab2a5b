//! Chat behaviours end to end against a running mock.

use std::time::Duration;

use serde_json::{json, Value};

use crate::chat::Behaviour;
use crate::{MockUpstream, UPSTREAM_MODEL};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` to `/v1/chat/completions` (`Connection: close`) and returns the status and
/// the de-chunked body.
async fn post_chat(mock: &MockUpstream, body: &Value) -> (u16, String) {
    let body = body.to_string();
    let mut s = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        mock.addr(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    if !chunked {
        return (status, rest.to_owned());
    }
    let mut out = String::new();
    let mut rest = rest;
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return (status, out);
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

fn request(model: &str, messages: Value, stream: bool) -> Value {
    let mut v = json!({"model": model, "messages": messages});
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v
}

/// The chunks of an SSE body (must end with `[DONE]`).
fn sse_chunks(body: &str) -> Vec<Value> {
    let data: Vec<&str> = body
        .split_terminator("\n\n")
        .map(|ev| ev.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Asserts a non-stream tool call.
fn assert_tool_call(v: &Value, id: &str, name: &str, arguments: &str) {
    assert_eq!(
        v["choices"][0]["message"],
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }],
        })
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["usage"]["completion_tokens"],
        arguments.split_whitespace().count()
    );
}

/// Asserts a streamed tool call (framing as `tools`), with usage.
fn assert_streamed_tool_call(chunks: &[Value], id: &str, name: &str, arguments: &str) {
    // role, head, two argument pieces, finish, usage
    assert_eq!(chunks.len(), 6, "{chunks:?}");
    let delta = |i: usize| &chunks[i]["choices"][0]["delta"];
    assert_eq!(*delta(0), json!({"role": "assistant", "content": null}));
    assert_eq!(
        *delta(1),
        json!({"tool_calls": [{
            "index": 0,
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }]})
    );
    let pieces: Vec<&str> = (2..4)
        .map(|i| {
            assert_eq!(delta(i)["tool_calls"][0]["index"], 0);
            assert!(delta(i)["tool_calls"][0].get("id").is_none());
            delta(i)["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    let half = arguments.chars().count() / 2;
    assert_eq!(pieces[0].chars().count(), half);
    assert_eq!(pieces.concat(), arguments);
    assert_eq!(*delta(4), json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(
        chunks[5]["usage"]["completion_tokens"],
        arguments.split_whitespace().count()
    );
}

/// Asserts a normal answer `content`, non-stream and stream.
async fn assert_answer(mock: &MockUpstream, model: &str, messages: &Value, content: &str) {
    let (status, body) = post_chat(mock, &request(model, messages.clone(), false)).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["choices"][0]["message"],
        json!({"role": "assistant", "content": content})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let words = content.split_whitespace().count();
    assert_eq!(v["usage"]["completion_tokens"], words);

    let (status, body) = post_chat(mock, &request(model, messages.clone(), true)).await;
    assert_eq!(status, 200);
    let chunks = sse_chunks(&body);
    // role + one chunk per word + finish + usage
    assert_eq!(chunks.len(), words + 3, "{body}");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = chunks[1..=words]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, content);
    assert_eq!(chunks[words + 1]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[words + 2]["usage"]["completion_tokens"], words);
}

#[test]
fn parse_tool_call() {
    let tc = |name: &str, times: usize, delay: Option<u64>| Behaviour::ToolCall {
        name: name.to_owned(),
        times,
        delay: delay.map(Duration::from_millis),
    };
    assert_eq!(
        Behaviour::parse("tool-call:advisor"),
        tc("advisor", 1, None)
    );
    assert_eq!(
        Behaviour::parse("tool-call:advisor*3"),
        tc("advisor", 3, None)
    );
    assert_eq!(
        Behaviour::parse("tool-call:get_weather*2@50"),
        tc("get_weather", 2, Some(50))
    );
    assert_eq!(Behaviour::parse("tool-call:a@7*2"), tc("a", 2, Some(7)));
    assert_eq!(Behaviour::parse("tool-call:a@20"), tc("a", 1, Some(20)));
    assert_eq!(Behaviour::parse("tool-call:a*0"), tc("a", 1, None));
    assert_eq!(Behaviour::parse("tool-call:a*x@y"), tc("a", 1, Some(100)));
    assert_eq!(Behaviour::parse("tool-call"), tc("tool", 1, None));
    // The other behaviours are unchanged.
    assert_eq!(Behaviour::parse("tools"), Behaviour::Tools);
    assert_eq!(
        Behaviour::parse("slow:5"),
        Behaviour::Slow(Duration::from_millis(5))
    );
    assert_eq!(Behaviour::parse("tool"), Behaviour::Normal);
    assert_eq!(
        Behaviour::parse("slow-first:20@5"),
        Behaviour::SlowFirst(Duration::from_millis(20), Some(Duration::from_millis(5)))
    );
    assert_eq!(
        Behaviour::parse("slow-first:20"),
        Behaviour::SlowFirst(Duration::from_millis(20), None)
    );
}

#[tokio::test]
async fn tool_call_without_tool_result_calls_the_tool() {
    let mock = MockUpstream::start().await;
    // A quote in the question checks the arguments are escaped JSON.
    let messages = json!([
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "earlier question"},
        {"role": "tool", "tool_call_id": "old", "content": "old result"},
        {"role": "user", "content": "what is \"up\" today"},
    ]);
    let args = r#"{"question":"what is \"up\" today"}"#;
    assert_eq!(
        serde_json::from_str::<Value>(args).unwrap(),
        json!({"question": "what is \"up\" today"})
    );

    let (status, body) = post_chat(
        &mock,
        &request("tool-call:advisor", messages.clone(), false),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_tool_call(&v, "call_mock_1", "advisor", args);
    assert_eq!(v["model"], UPSTREAM_MODEL);
    // prompt: 2 + 2 + 2 + 4 words
    assert_eq!(v["usage"]["prompt_tokens"], 10);

    let (status, body) = post_chat(&mock, &request("tool-call:advisor", messages, true)).await;
    assert_eq!(status, 200);
    assert_streamed_tool_call(&sse_chunks(&body), "call_mock_1", "advisor", args);
    assert_eq!(mock.cancelled_streams(), 0);
}

#[tokio::test]
async fn tool_call_with_tool_result_answers() {
    let mock = MockUpstream::start().await;
    let messages = json!([
        {"role": "user", "content": "hello there"},
        {"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_mock_1", "type": "function",
            "function": {"name": "advisor", "arguments": "{\"question\":\"hello there\"}"},
        }]},
        {"role": "tool", "tool_call_id": "call_mock_1", "content": "sunny and warm"},
    ]);
    assert_answer(
        &mock,
        "tool-call:advisor",
        &messages,
        "tool said: sunny and warm",
    )
    .await;
}

#[tokio::test]
async fn tool_call_times_two() {
    let mock = MockUpstream::start().await;
    let model = "tool-call:get_weather*2";
    let args = r#"{"question":"weather in Paris"}"#;
    let mut messages = vec![json!({"role": "user", "content": "weather in Paris"})];

    // No result yet: first call.
    let (_, body) = post_chat(&mock, &request(model, json!(messages), false)).await;
    assert_tool_call(
        &serde_json::from_str(&body).unwrap(),
        "call_mock_1",
        "get_weather",
        args,
    );

    // One result: calls again, with the next id.
    messages.push(json!({"role": "tool", "tool_call_id": "call_mock_1", "content": "rain"}));
    let (_, body) = post_chat(&mock, &request(model, json!(messages), false)).await;
    assert_tool_call(
        &serde_json::from_str(&body).unwrap(),
        "call_mock_2",
        "get_weather",
        args,
    );
    let (_, body) = post_chat(&mock, &request(model, json!(messages), true)).await;
    assert_streamed_tool_call(&sse_chunks(&body), "call_mock_2", "get_weather", args);

    // Two results: answers with the last one.
    messages.push(json!({"role": "tool", "tool_call_id": "call_mock_2", "content": "sun later"}));
    assert_answer(&mock, model, &json!(messages), "tool said: sun later").await;
}

#[tokio::test]
async fn tool_call_stream_delay() {
    let mock = MockUpstream::start().await;
    let messages = json!([{"role": "user", "content": "hi"}]);
    // 6 events without usage (role, head, 2 pieces, finish, [DONE]): 5 gaps of 20ms.
    let mut req = request("tool-call:advisor@20", messages.clone(), true);
    req["stream_options"] = json!({"include_usage": false});
    let t = std::time::Instant::now();
    let (_, body) = post_chat(&mock, &req).await;
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(body.matches("\n\n").count(), 6, "{body}");
    // Non-stream is not delayed.
    let t = std::time::Instant::now();
    let (status, _) = post_chat(&mock, &request("tool-call:advisor@500", messages, false)).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn with_context_enforced_a_prompt_that_reaches_the_window_is_refused_like_llama_cpp() {
    let mock = MockUpstream::start_with(crate::MockOptions::new(
        crate::Flavour::LlamaCpp,
        vec![crate::MockModel::new("small", Some(10))],
    ))
    .await;
    let long =
        json!([{"role": "user", "content": "one two three four five six seven eight nine ten"}]);
    let short = json!([{"role": "user", "content": "one two three four five"}]);
    let body = |messages: &Value, max: Option<u64>| {
        let mut b = json!({"model": "small", "messages": messages});
        if let Some(max) = max {
            b["max_tokens"] = json!(max);
        }
        b
    };
    // Off (the default): served as usual.
    let (status, _) = post_chat(&mock, &body(&long, None)).await;
    assert_eq!(status, 200);
    mock.set_enforce_context(true);
    let (status, text) = post_chat(&mock, &body(&long, None)).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["error"]["type"], "exceed_context_size_error");
    assert_eq!(error["error"]["n_prompt_tokens"], 10);
    assert_eq!(error["error"]["n_ctx"], 10);
    // A prompt that fits is answered, cut at max_tokens words.
    let (status, text) = post_chat(&mock, &body(&short, Some(3))).await;
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "echo: one two");
    assert_eq!(answer["usage"]["completion_tokens"], 3);
}
