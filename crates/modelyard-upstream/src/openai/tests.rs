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
fn usage_reads_both_cache_conventions() {
    let usage_of = |usage: &str| {
        let body = format!(r#"{{"model":"m","choices":[],"usage":{usage}}}"#);
        rewrite_completion(body.as_bytes(), "p/m")
            .unwrap()
            .summary
            .usage
    };
    // OpenAI names with Anthropic-style cache fields (a proxy): the cache
    // counts are inside prompt_tokens.
    let proxied = usage_of(
        r#"{"prompt_tokens":1300,"completion_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200}"#,
    );
    assert_eq!(proxied.prompt_tokens, Some(1300));
    assert_eq!(proxied.cached_prompt_tokens, Some(1000));
    assert_eq!(proxied.cache_creation_tokens, Some(200));
    assert_eq!(proxied.total_tokens, Some(1350));
    // Anthropic's own names: the cache counts are beside input_tokens.
    let anthropic = usage_of(
        r#"{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":1000,"cache_creation_input_tokens":200}"#,
    );
    assert_eq!(anthropic, proxied);
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

/// Writing onto a shared buffer appends exactly what `accept` returns,
/// after what the buffer held; an error or garbage appends nothing.
#[test]
fn accept_into_appends_what_accept_returns() {
    let chunks: [&[u8]; 5] = [
        br#"{"model":"u","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#,
        br#"{"model" : null, "choices":[{"index":0,"delta":{"content":"x"}}]}"#,
        br#"{"choices":[{"index":0,"delta":{"content":"no model"}}]}"#,
        br#"{"model":"u","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":2,"total_tokens":6}}"#,
        br#"{"choices":[{"index":0,"delta":{"content":"\"quoted\""}}],"model":"u"}"#,
    ];
    let client = "p/\"odd\" é";
    let json = model_json(client);
    let (mut one, mut other) = (StreamAccumulator::default(), StreamAccumulator::default());
    let mut out = b"before ".to_vec();
    for chunk in chunks {
        let at = out.len();
        let accepted = other.accept_into(chunk, &json, &mut out).unwrap();
        let (kind, body) = match one.accept(chunk, client).unwrap() {
            ChunkKind::Forward(body) => (Accepted::Chunk, body),
            ChunkKind::UsageOnly(body) => (Accepted::UsageOnly, body),
            ChunkKind::Error(e) => panic!("{e}"),
        };
        assert_eq!(accepted, kind);
        assert_eq!(&out[at..], &body[..]);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        // A chunk without a string `model` keeps what it had (none, or
        // `null`), as `accept` does.
        if chunk.windows(9).any(|w| w == b"\"model\":\"") {
            assert_eq!(value["model"], client);
        }
    }
    assert_eq!(one.summary().text, other.summary().text);
    assert_eq!(
        other.summary().text.as_deref(),
        Some("Hixno model\"quoted\"")
    );
    assert_eq!(other.summary().usage.total_tokens, Some(6));
    let at = out.len();
    assert!(matches!(
        other.accept_into(br#"{"error":{"message":"boom"}}"#, &json, &mut out),
        Ok(Accepted::Error(_))
    ));
    assert!(other.accept_into(b"{not json", &json, &mut out).is_err());
    assert_eq!(out.len(), at);
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

// ---------------------------------------------------------------------------
// Hostile upstream data (issue 12): bounded indexes and counts, no panics.

fn tool_chunk(index: u64) -> String {
    serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": index, "id": "call_1", "function": {"name": "f", "arguments": "{}"}}
    ]}}]})
    .to_string()
}

#[test]
fn tool_call_index_over_the_cap_is_malformed_not_an_allocation() {
    let mut acc = StreamAccumulator::default();
    for index in [4_294_967_295u64, u64::MAX, 129] {
        let err = acc
            .accept(tool_chunk(index).as_bytes(), "p/m")
            .expect_err("index over the cap");
        assert!(
            err.contains(&format!("tool call index {index} is over the limit of 128")),
            "{err}"
        );
    }
    assert_eq!(acc.tool_call_count(), 0);
    // The cap itself is accepted.
    assert!(acc.accept(tool_chunk(128).as_bytes(), "p/m").is_ok());
    assert_eq!(acc.tool_call_count(), 129);
    assert_eq!(acc.tool_call(128), Some(("call_1", "f", "{}")));
}

#[test]
fn an_answer_over_its_cap_is_malformed() {
    let mut acc = StreamAccumulator::with_max_answer_bytes(100);
    let content = |text: &str| {
        serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]}).to_string()
    };
    assert!(acc
        .accept(content(&"a".repeat(60)).as_bytes(), "p/m")
        .is_ok());
    let err = acc
        .accept(content(&"b".repeat(41)).as_bytes(), "p/m")
        .unwrap_err();
    assert!(err.contains("larger than 100 bytes"), "{err}");
    // Tool call arguments and reasoning count too.
    let mut acc = StreamAccumulator::with_max_answer_bytes(100);
    assert!(acc.accept(tool_chunk(0).as_bytes(), "p/m").is_ok());
    let reasoning = serde_json::json!({"choices": [{"index": 0, "delta": {
        "reasoning_content": "r".repeat(95)}}]});
    assert!(acc.accept(reasoning.to_string().as_bytes(), "p/m").is_err());
    assert_eq!(MAX_ANSWER_BYTES, 64 * 1024 * 1024);
}

#[test]
fn usage_of_u64_max_is_clamped_and_never_overflows() {
    let max = u64::MAX;
    let cap = u64::from(u32::MAX);
    // Streamed: no total, prompt + completion would overflow. Each count
    // is clamped to 2^32 − 1; the derived total is their sum.
    let mut acc = StreamAccumulator::default();
    let chunk = format!(
        r#"{{"choices":[],"usage":{{"prompt_tokens":{max},"completion_tokens":{max},"prompt_tokens_details":{{"cached_tokens":{max}}},"completion_tokens_details":{{"reasoning_tokens":{max}}}}}}}"#
    );
    assert!(matches!(
        acc.accept(chunk.as_bytes(), "p/m"),
        Ok(ChunkKind::UsageOnly(_))
    ));
    let usage = acc.summary().usage;
    assert_eq!(usage.prompt_tokens, Some(cap));
    assert_eq!(usage.completion_tokens, Some(cap));
    assert_eq!(usage.reasoning_tokens, Some(cap));
    assert_eq!(usage.cached_prompt_tokens, Some(cap));
    assert_eq!(usage.total_tokens, Some(2 * cap));
    // Non-streamed, with every count at u64::MAX.
    let body = format!(
        r#"{{"model":"m","choices":[],"usage":{{"prompt_tokens":{max},"completion_tokens":1,"total_tokens":{max}}}}}"#
    );
    let summary = rewrite_completion(body.as_bytes(), "p/m").unwrap().summary;
    assert_eq!(summary.usage.prompt_tokens, Some(cap));
    assert_eq!(summary.usage.total_tokens, Some(cap));
    let body =
        format!(r#"{{"choices":[],"usage":{{"prompt_tokens":{max},"completion_tokens":{max}}}}}"#);
    let summary = rewrite_completion(body.as_bytes(), "p/m").unwrap().summary;
    assert_eq!(summary.usage.total_tokens, Some(2 * cap));
}

mod properties {
    use proptest::collection::{btree_map, vec};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    use super::super::*;

    /// Any JSON value, a few levels deep.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..6).prop_map(Value::Array),
                btree_map(
                    "[a-z_]{0,8}|index|delta|choices|tool_calls|usage|model|error",
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Plausible chunks: the OpenAI shape with arbitrary values in every
    /// slot, so deserialization gets past the top level often.
    fn chunk_json() -> impl Strategy<Value = Value> {
        let tool_call = (json_value(), json_value(), json_value(), json_value()).prop_map(
            |(index, id, name, arguments)| {
                serde_json::json!({"index": index, "id": id,
                    "function": {"name": name, "arguments": arguments}})
            },
        );
        let delta = (json_value(), json_value(), vec(tool_call, 0..3)).prop_map(
            |(content, reasoning, calls)| {
                serde_json::json!({"content": content, "reasoning_content": reasoning,
                    "tool_calls": calls})
            },
        );
        let choice = (0u64..3, delta, json_value()).prop_map(|(index, delta, finish)| {
            serde_json::json!({"index": index, "delta": delta, "finish_reason": finish})
        });
        let usage = vec((any::<u64>(), 0usize..5), 0..5).prop_map(|counts| {
            let names = [
                "prompt_tokens",
                "completion_tokens",
                "total_tokens",
                "cached_tokens",
                "reasoning_tokens",
            ];
            let mut m = Map::new();
            for (n, i) in counts {
                m.insert(names[i].to_owned(), Value::from(n));
            }
            Value::Object(m)
        });
        prop_oneof![
            json_value(),
            (vec(choice, 0..3), proptest::option::of(usage), json_value()).prop_map(
                |(choices, usage, model)| {
                    let mut m = Map::new();
                    m.insert("model".into(), model);
                    m.insert("choices".into(), Value::Array(choices));
                    if let Some(u) = usage {
                        m.insert("usage".into(), u);
                    }
                    Value::Object(m)
                }
            ),
        ]
    }

    const SPECIAL: &[&str] = &[
        "model",
        "stream",
        "stream_options",
        "messages",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "tools",
    ];

    /// A chat request: arbitrary members plus, each maybe, `model`,
    /// `stream`, `stream_options`, and `messages`.
    fn request() -> impl Strategy<Value = (Value, bool)> {
        let others = btree_map("[a-z_]{1,10}", json_value(), 0..6);
        let model = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            ".{0,10}".prop_map(|s| Some(Value::from(s))),
        ];
        let stream = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<bool>().prop_map(|b| Some(Value::from(b)))
        ];
        let options = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            btree_map("[a-z_]{1,10}|include_usage", json_value(), 0..4)
                .prop_map(|m| Some(Value::Object(m.into_iter().collect()))),
        ];
        let messages = vec(json_value(), 0..3);
        (
            others,
            model,
            stream,
            options,
            messages,
            any::<bool>(),
            any::<u8>(),
        )
            .prop_map(
                |(others, model, stream, options, messages, pretty, order)| {
                    let mut m = Map::new();
                    let mut special: Vec<(&str, Option<Value>)> = vec![
                        ("model", model),
                        ("stream", stream),
                        ("stream_options", options),
                        ("messages", Some(Value::Array(messages))),
                    ];
                    let len = special.len();
                    special.rotate_left(usize::from(order) % len);
                    for (key, value) in others {
                        if !SPECIAL.contains(&key.as_str()) {
                            m.insert(key, value);
                        }
                    }
                    for (key, value) in special {
                        if let Some(value) = value {
                            m.insert(key.to_owned(), value);
                        }
                    }
                    (Value::Object(m), pretty)
                },
            )
    }

    fn without(value: &Value, keys: &[&str]) -> Value {
        let mut value = value.clone();
        if let Value::Object(m) = &mut value {
            for k in keys {
                m.shift_remove(*k);
            }
        }
        value
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// `upstream_body` changes `model` (to the upstream name) and, for a
        /// stream, `stream_options.include_usage` (to true); every other
        /// member, and every other member of `stream_options`, is the same.
        #[test]
        fn upstream_body_changes_only_model_and_stream_options(
            (request, pretty) in request(),
            upstream_model in ".{0,12}",
        ) {
            let body = if pretty {
                serde_json::to_vec_pretty(&request).unwrap()
            } else {
                serde_json::to_vec(&request).unwrap()
            };
            let Ok(head) = ChatRequestHead::parse(&body) else {
                return Ok(());
            };
            let out = head.upstream_body(&body, &upstream_model);
            let sent: Value = serde_json::from_slice(&out)
                .map_err(|e| TestCaseError::fail(format!("not JSON: {e}: {}", String::from_utf8_lossy(&out))))?;
            // Compared with the body as parsed (floats read back may differ
            // from the generated ones in the last digit).
            let request: Value = serde_json::from_slice(&body).unwrap();
            let keys = ["model", "stream_options"];
            prop_assert_eq!(without(&sent, &keys), without(&request, &keys));
            prop_assert_eq!(&sent["model"], &Value::from(upstream_model));
            let original = request.get("stream_options").cloned();
            if head.stream && !head.client_include_usage {
                prop_assert_eq!(&sent["stream_options"]["include_usage"], &Value::Bool(true));
                let before = original.filter(|v| !v.is_null()).unwrap_or(Value::Object(Map::new()));
                prop_assert_eq!(
                    without(&sent["stream_options"], &["include_usage"]),
                    without(&before, &["include_usage"])
                );
            } else {
                prop_assert_eq!(sent.get("stream_options").cloned(), original);
            }
        }

        /// The stream accumulator never panics on any chunk JSON, and its
        /// bounds hold: at most 129 tool calls, each token count ≤ 2^32 − 1
        /// (a derived total ≤ twice that).
        #[test]
        fn accumulator_never_panics_on_arbitrary_chunk_json(chunks in vec(chunk_json(), 1..6)) {
            let mut acc = StreamAccumulator::default();
            for chunk in &chunks {
                let _ = acc.accept(chunk.to_string().as_bytes(), "p/m");
            }
            prop_assert!(acc.tool_call_count() <= 129);
            let usage = acc.summary().usage;
            for n in [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens,
                      usage.reasoning_tokens, usage.cached_prompt_tokens].into_iter().flatten() {
                prop_assert!(n <= 2 * u64::from(u32::MAX));
            }
        }

        /// … nor on arbitrary bytes.
        #[test]
        fn accumulator_never_panics_on_arbitrary_bytes(chunks in vec(vec(any::<u8>(), 0..256), 1..6)) {
            let mut acc = StreamAccumulator::default();
            for chunk in &chunks {
                let _ = acc.accept(chunk, "p/m");
            }
            let _ = acc.summary();
        }

        /// Non-streamed answers: no panic on arbitrary JSON either.
        #[test]
        fn completions_never_panic_on_arbitrary_json(body in chunk_json()) {
            let _ = rewrite_completion(body.to_string().as_bytes(), "p/m");
        }
    }
}

#[test]
fn embeddings_head_reads_input_shapes_and_splices_only_the_model() {
    let body = br#"{ "input" : ["a b", "c"], "model":"p/emb" ,"encoding_format":"base64","user":"u1","dimensions":8}"#;
    let head = EmbeddingsRequestHead::parse(body).unwrap();
    assert_eq!(head.model.as_deref(), Some("p/emb"));
    assert_eq!(head.input, TextInput::Texts(2));
    assert_eq!(head.input.count(), 2);
    assert_eq!(head.encoding_format.as_deref(), Some("base64"));
    assert_eq!(head.user.as_deref(), Some("u1"));
    assert_eq!(
        String::from_utf8(head.upstream_body(body, "emb")).unwrap(),
        r#"{ "input" : ["a b", "c"], "model":"emb" ,"encoding_format":"base64","user":"u1","dimensions":8}"#
    );
    let shapes: [(&[u8], TextInput); 4] = [
        (br#"{"input":"one"}"#, TextInput::Text),
        (br#"{"input":[1,2,3]}"#, TextInput::Tokens(3)),
        (br#"{"input":[[1,2],[3]]}"#, TextInput::TokenArrays(2)),
        (br#"{"input":[]}"#, TextInput::Texts(0)),
    ];
    for (body, input) in shapes {
        let head = EmbeddingsRequestHead::parse(body).unwrap();
        assert_eq!(head.input, input, "{}", String::from_utf8_lossy(body));
        assert_eq!(head.model, None);
    }
    // No `model`: added first.
    let head = EmbeddingsRequestHead::parse(br#"{"input":"x"}"#).unwrap();
    assert_eq!(
        head.upstream_body(br#"{"input":"x"}"#, "m"),
        br#"{"model":"m","input":"x"}"#.to_vec()
    );
    for (body, err) in [
        (&br#"{"model":"m"}"#[..], RequestError::Missing("input")),
        (
            br#"{"model":"m","input":null}"#,
            RequestError::Missing("input"),
        ),
        (
            br#"{"model":"m","input":{"a":1}}"#,
            RequestError::FieldType {
                field: "input",
                expected: "a string, an array of strings, an array of token ids or an \
                           array of token-id arrays",
            },
        ),
        (
            br#"{"model":7,"input":"x"}"#,
            RequestError::FieldType {
                field: "model",
                expected: "a string",
            },
        ),
    ] {
        assert_eq!(EmbeddingsRequestHead::parse(body).unwrap_err(), err);
    }
    assert!(matches!(
        EmbeddingsRequestHead::parse(br#"{"input":["a",1]}"#),
        Err(RequestError::FieldType { field: "input", .. })
    ));
    assert!(matches!(
        EmbeddingsRequestHead::parse(b"[1]"),
        Err(RequestError::NotJson(_))
    ));
}

#[test]
fn rerank_head_needs_a_query_and_documents() {
    let body = br#"{"model":"p/r","query":"q","documents":["a","b","c"],"top_n":2}"#;
    let head = RerankRequestHead::parse(body).unwrap();
    assert_eq!((head.documents, head.top_n), (3, Some(2)));
    assert_eq!(
        head.upstream_body(body, "r"),
        br#"{"model":"r","query":"q","documents":["a","b","c"],"top_n":2}"#.to_vec()
    );
    // llama.cpp's TEI-style `texts`.
    let head = RerankRequestHead::parse(br#"{"query":"q","texts":["a"]}"#).unwrap();
    assert_eq!(head.documents, 1);
    assert_eq!(
        RerankRequestHead::parse(br#"{"documents":[]}"#).unwrap_err(),
        RequestError::Missing("query")
    );
    assert_eq!(
        RerankRequestHead::parse(br#"{"query":"q"}"#).unwrap_err(),
        RequestError::Missing("documents")
    );
    assert!(matches!(
        RerankRequestHead::parse(br#"{"query":1,"documents":[]}"#),
        Err(RequestError::FieldType { field: "query", .. })
    ));
    assert!(matches!(
        RerankRequestHead::parse(br#"{"query":"q","documents":"a"}"#),
        Err(RequestError::FieldType {
            field: "documents",
            ..
        })
    ));
}

#[test]
fn completion_head_forces_usage_for_streams() {
    let body = br#"{"model":"p/m","prompt":"Once","stream":true,"max_tokens":5,"n":1}"#;
    let head = CompletionRequestHead::parse(body).unwrap();
    assert!(head.stream && !head.client_include_usage);
    assert_eq!(head.prompt, TextInput::Text);
    assert_eq!((head.max_tokens, head.n), (Some(5), Some(1)));
    assert_eq!(
        String::from_utf8(head.upstream_body(body, "m")).unwrap(),
        r#"{"stream_options":{"include_usage":true},"model":"m","prompt":"Once","stream":true,"max_tokens":5,"n":1}"#
    );
    let body = br#"{"model":"p/m","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true}}"#;
    let head = CompletionRequestHead::parse(body).unwrap();
    assert!(head.client_include_usage);
    assert_eq!(head.prompt, TextInput::Texts(2));
    assert_eq!(
        head.upstream_body(body, "m"),
        br#"{"model":"m","prompt":["a","b"],"stream":true,"stream_options":{"include_usage":true}}"#.to_vec()
    );
    // Not streamed: only the model changes.
    let body = br#"{"model":"p/m","prompt":"x"}"#;
    let head = CompletionRequestHead::parse(body).unwrap();
    assert_eq!(
        head.upstream_body(body, "m"),
        br#"{"model":"m","prompt":"x"}"#.to_vec()
    );
    assert_eq!(
        CompletionRequestHead::parse(br#"{"model":"m"}"#).unwrap_err(),
        RequestError::Missing("prompt")
    );
    assert!(matches!(
        CompletionRequestHead::parse(br#"{"prompt":"x","stream":"yes"}"#),
        Err(RequestError::FieldType {
            field: "stream",
            ..
        })
    ));
    assert!(matches!(
        CompletionRequestHead::parse(br#"{"prompt":"x","max_tokens":-1}"#),
        Err(RequestError::FieldType {
            field: "max_tokens",
            ..
        })
    ));
}

#[test]
fn legacy_completions_and_embeddings_are_summarized() {
    let body = br#"{"id":"c","object":"text_completion","model":"up","choices":[{"text":" the end","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#;
    let out = rewrite_completion(body, "p/m").unwrap();
    assert_eq!(out.summary.text.as_deref(), Some(" the end"));
    assert_eq!(out.summary.finish_reason.as_deref(), Some("length"));
    assert_eq!(out.summary.usage.completion_tokens, Some(3));
    assert!(String::from_utf8(out.body)
        .unwrap()
        .contains(r#""model":"p/m""#));

    let body = br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1e-3]}],"model":"up","usage":{"prompt_tokens":4,"total_tokens":4}}"#;
    let out = rewrite_completion(body, "p/e").unwrap();
    assert_eq!(out.summary.text, None);
    assert_eq!(out.summary.usage.prompt_tokens, Some(4));
    assert_eq!(out.summary.usage.total_tokens, Some(4));
    assert_eq!(
        String::from_utf8(out.body).unwrap(),
        r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-1e-3]}],"model":"p/e","usage":{"prompt_tokens":4,"total_tokens":4}}"#
    );

    let mut acc = StreamAccumulator::default();
    for chunk in [
        r#"{"choices":[{"text":" a","index":0,"finish_reason":null}],"model":"up","object":"text_completion"}"#,
        r#"{"choices":[{"text":" b","index":0,"finish_reason":"length"}],"model":"up","usage":{"prompt_tokens":2,"completion_tokens":2,"total_tokens":4}}"#,
    ] {
        match acc.accept(chunk.as_bytes(), "p/m").unwrap() {
            ChunkKind::Forward(body) => {
                assert!(String::from_utf8(body)
                    .unwrap()
                    .contains(r#""model":"p/m""#))
            }
            other => panic!("{other:?}"),
        }
    }
    let summary = acc.summary();
    assert_eq!(summary.text.as_deref(), Some(" a b"));
    assert_eq!(summary.finish_reason.as_deref(), Some("length"));
    assert_eq!(summary.usage.total_tokens, Some(4));
}
