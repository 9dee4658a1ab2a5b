use super::*;

#[test]
fn upstream_body_rewrites_only_the_model() {
    let body = br#"{ "model" : "local/smol",  "messages":[{"role":"user","content":"hi"}], "x_unknown": {"a": 1.50}, "temperature": 1e-3 }"#;
    let head = ChatRequestHead::parse(body).unwrap();
    assert_eq!(head.model.as_deref(), Some("local/smol"));
    assert!(!head.stream);
    let out = head.upstream_body(body, "smol");
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{ "model" : "smol",  "messages":[{"role":"user","content":"hi"}], "x_unknown": {"a": 1.50}, "temperature": 1e-3 }"#
    );
}

#[test]
fn streaming_requests_ask_for_usage() {
    let body = br#"{"model":"p/m","stream":true,"messages":[]}"#;
    let head = ChatRequestHead::parse(body).unwrap();
    assert!(head.stream && !head.client_include_usage);
    let out = String::from_utf8(head.upstream_body(body, "m")).unwrap();
    assert_eq!(
        out,
        r#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
    );

    let body = br#"{"model":"p/m","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}"#;
    let head = ChatRequestHead::parse(body).unwrap();
    let out: serde_json::Value = serde_json::from_slice(&head.upstream_body(body, "m")).unwrap();
    assert_eq!(
        out["stream_options"],
        serde_json::json!({"include_usage": true, "x": 1})
    );

    let body =
        br#"{"model":"p/m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
    let head = ChatRequestHead::parse(body).unwrap();
    assert!(head.client_include_usage);
    assert_eq!(head.upstream_body(body, "p/m"), body.to_vec());
}

#[test]
fn missing_model_is_inserted() {
    let body = br#"{"messages":[]}"#;
    let head = ChatRequestHead::parse(body).unwrap();
    assert_eq!(head.model, None);
    assert_eq!(
        head.upstream_body(body, "m"),
        br#"{"model":"m","messages":[]}"#.to_vec()
    );
}

#[test]
fn request_errors_name_the_field() {
    let cases: [(&[u8], &str); 5] = [
        (b"not json", "request body is not a JSON object"),
        (br#"{"model":3,"messages":[]}"#, "`model` must be a string"),
        (
            br#"{"model":"a","stream":"yes","messages":[]}"#,
            "`stream` must be a boolean",
        ),
        (br#"{"model":"a"}"#, "`messages` is required"),
        (
            br#"{"model":"a","messages":{}}"#,
            "`messages` must be an array of messages",
        ),
    ];
    for (body, want) in cases {
        let err = ChatRequestHead::parse(body).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err} should start with {want}");
    }
}

#[test]
fn completion_is_rewritten_and_summarized() {
    let body = br#"{"id":"x","model":"smollm2","choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"there\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":2}},"timings":{"x":1}}"#;
    let out = rewrite_completion(body, "local/smollm2").unwrap();
    let text = String::from_utf8(out.body).unwrap();
    assert!(text.starts_with(r#"{"id":"x","model":"local/smollm2","choices""#));
    assert!(text.ends_with(r#""timings":{"x":1}}"#));
    assert_eq!(out.summary.text.as_deref(), Some("Hello \"there\""));
    assert_eq!(out.summary.finish_reason.as_deref(), Some("stop"));
    assert_eq!(out.summary.usage.prompt_tokens, Some(5));
    assert_eq!(out.summary.usage.cached_prompt_tokens, Some(2));
    assert_eq!(out.summary.usage.total_tokens, Some(8));
}

#[test]
fn stream_chunks_accumulate() {
    let mut acc = StreamAccumulator::default();
    let chunks: [&[u8]; 5] = [
        br#"{"model":"u","choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}"#,
        br#"{"model":"u","choices":[{"index":0,"delta":{"content":"Hi \u00e9"}}]}"#,
        br#"{"model":"u","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
        br#"{"model":"u","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]},"finish_reason":"tool_calls"}]}"#,
        br#"{"model":"u","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#,
    ];
    let mut kinds = Vec::new();
    for chunk in chunks {
        kinds.push(acc.accept(chunk, "p/u").unwrap());
    }
    assert!(matches!(&kinds[1], ChunkKind::Forward(b) if b.starts_with(br#"{"model":"p/u""#)));
    assert!(matches!(&kinds[4], ChunkKind::UsageOnly(_)));
    let summary = acc.summary();
    assert_eq!(summary.text.as_deref(), Some("Hi é"));
    assert_eq!(summary.finish_reason.as_deref(), Some("tool_calls"));
    assert_eq!(summary.usage.total_tokens, Some(6));
    assert_eq!(
        summary.tool_calls.unwrap(),
        serde_json::json!([{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}])
    );
}

#[test]
fn in_band_errors_and_garbage_are_detected() {
    let mut acc = StreamAccumulator::default();
    assert_eq!(
        acc.accept(br#"{"error":{"message":"boom"}}"#, "m").unwrap(),
        ChunkKind::Error(r#"{"message":"boom"}"#.into())
    );
    assert!(acc.accept(b"{not json", "m").is_err());
}

#[test]
fn upstream_error_messages() {
    let (message, kind, code) = upstream_error_message(
        br#"{"error":{"message":"too long","type":"exceed_context_size_error","code":400}}"#,
        100,
    );
    assert_eq!(
        (message.as_str(), kind.as_deref(), code),
        (
            "too long",
            Some("exceed_context_size_error"),
            Some(serde_json::json!(400))
        )
    );
    let (message, _, _) = upstream_error_message(b"plain text failure that is long", 10);
    assert_eq!(message, "plain text… (truncated)");
}

#[test]
fn null_model_and_stream_options_are_replaced_not_duplicated() {
    let body = br#"{"model":null,"stream":true,"stream_options":null,"messages":[]}"#;
    let head = ChatRequestHead::parse(body).unwrap();
    assert_eq!(head.model, None);
    let out = String::from_utf8(head.upstream_body(body, "m")).unwrap();
    assert_eq!(
        out,
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#
    );
}

#[test]
fn in_band_errors_in_completions_are_errors() {
    let err = rewrite_completion(br#"{"error":{"message":"boom"}}"#, "p/m").unwrap_err();
    assert_eq!(err, CompletionError::InBand(r#"{"message":"boom"}"#.into()));
    assert!(matches!(
        rewrite_completion(b"nope", "p/m"),
        Err(CompletionError::NotJson(_))
    ));
}

#[test]
fn param_rules_strip_then_set_keeping_order() {
    let set: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"temperature":0.2,"top_k":40}"#).unwrap();
    let out = apply_param_rules(
        br#"{"model":"m","messages":[],"temperature":1,"seed":7,"logit_bias":{}}"#,
        &set,
        &["seed".to_owned(), "logit_bias".to_owned()],
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#"{"model":"m","messages":[],"temperature":0.2,"top_k":40}"#
    );
}
