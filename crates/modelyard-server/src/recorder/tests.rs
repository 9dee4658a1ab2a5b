use super::*;

fn session(request_bytes: usize) -> RecordedSession {
    CallRecord {
        operation: "gateway".into(),
        conversation_id: None,
        turn_id: None,
        model_id: "p/m".into(),
        provider: "p".into(),
        upstream_model: "m".into(),
        stream: false,
        request_json: "x".repeat(request_bytes),
        summary: AnswerSummary::default(),
        sent_at_ms: 1,
        first_token_at_ms: None,
        completed_at_ms: 2,
        http_status: Some(200),
        error: None,
        attempt: 1,
        route: None,
    }
    .into_session()
}

#[test]
fn the_queue_is_bounded_in_bytes_and_counts_what_it_drops() {
    // A writer that does not read: the queue only fills.
    let (recorder, _rx) = Recorder::with_limits(1_000, 4 * 1024 * 1024);
    let project = ProjectId::default_project();
    for _ in 0..6 {
        recorder.record(&project, session(1024 * 1024));
    }
    let stats = recorder.stats();
    assert_eq!(stats.queued, 4, "{stats:?}");
    assert_eq!(stats.queued_bytes, 4 * 1024 * 1024, "{stats:?}");
    assert_eq!(stats.dropped, 2, "{stats:?}");
    // Small records still fit in what is left; a built one counts its bytes.
    recorder.record_with(&project, 10, || session(10));
    assert_eq!(recorder.stats().queued, 4, "the byte bound is reached");
    assert_eq!(recorder.stats().dropped, 3);

    // The record bound drops and counts too.
    let (recorder, _rx) = Recorder::with_limits(2, QUEUE_BYTES);
    for _ in 0..5 {
        recorder.record(&project, session(10));
    }
    let stats = recorder.stats();
    assert_eq!((stats.queued, stats.dropped), (2, 3), "{stats:?}");
}

#[tokio::test]
async fn the_writer_counts_written_and_failed_batches() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    let (recorder, rx) = Recorder::with_limits(100, QUEUE_BYTES);
    let counters = Arc::clone(&recorder.counters);
    let writer = Writer {
        store: store.clone(),
        content: ContentPolicy::Full,
        redact: false,
        pricing: None,
    };
    let task = tokio::spawn(write_loop(writer, rx, counters));
    let project = ProjectId::default_project();
    recorder.record(&project, session(100));
    // A project that does not exist: refused at once, counted as failed.
    recorder.record(&ProjectId::new("nope".to_owned()), session(100));
    drop(recorder.clone());
    let stats = loop {
        let stats = recorder.stats();
        if stats.queued == 0 {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        stats,
        CallLogStats {
            failed: 1,
            ..CallLogStats::default()
        }
    );
    drop(recorder);
    task.await.unwrap();
}

#[test]
fn strip_content_keeps_parameters_and_usage() {
    let mut call = NewLlmCall {
        id: "c".into(),
        session_id: "s".into(),
        model_id: "p/m".into(),
        provider: "p".into(),
        upstream_model: "m".into(),
        stream: true,
        request_json: r#"{"model":"p/m","temperature":0.5,"messages":[{"role":"user","content":"secret"},{"role":"assistant","content":"x"}]}"#.into(),
        response_text: Some("secret answer".into()),
        reasoning_text: Some("thinking".into()),
        tool_calls_json: Some("[]".into()),
        finish_reason: Some("stop".into()),
        usage: modelyard_store::UsageRow {
            total_tokens: Some(7),
            ..Default::default()
        },
        sent_at_ms: 1,
        first_token_at_ms: Some(2),
        completed_at_ms: Some(3),
        http_status: Some(200),
        error: None,
        attempt: 1,
        route: None,
        cost: Default::default(),
    };
    strip_content(&mut call);
    let request: serde_json::Value = serde_json::from_str(&call.request_json).unwrap();
    assert_eq!(
        request,
        serde_json::json!({"model": "p/m", "temperature": 0.5, "messagesOmitted": 2})
    );
    assert!(!call.request_json.contains("secret"));
    assert_eq!(call.response_text, None);
    assert_eq!(call.reasoning_text, None);
    assert_eq!(call.tool_calls_json, None);
    assert_eq!(call.usage.total_tokens, Some(7));
    assert_eq!(call.finish_reason.as_deref(), Some("stop"));

    call.request_json = "not json secret".into();
    strip_content(&mut call);
    assert_eq!(call.request_json, "{}");

    // Embeddings, legacy completions, rerank and Messages keep no text either.
    for (request, expected) in [
        (
            r#"{"model":"p/e","input":["secret","x"],"encoding_format":"float"}"#,
            serde_json::json!({"model": "p/e", "encoding_format": "float", "inputOmitted": 2}),
        ),
        (
            r#"{"model":"p/m","prompt":"secret","suffix":"secret","max_tokens":3}"#,
            serde_json::json!({"model": "p/m", "max_tokens": 3, "promptOmitted": 1, "suffixOmitted": 1}),
        ),
        (
            r#"{"model":"p/r","query":"secret","documents":["secret","b","c"],"top_n":1}"#,
            serde_json::json!({"model": "p/r", "top_n": 1, "queryOmitted": 1, "documentsOmitted": 3}),
        ),
        // A Messages request passed through natively: `system` is content.
        (
            r#"{"model":"p/c","system":[{"type":"text","text":"secret"}],"messages":[{"role":"user","content":"secret"}],"max_tokens":9}"#,
            serde_json::json!({"model": "p/c", "max_tokens": 9, "systemOmitted": 1, "messagesOmitted": 1}),
        ),
    ] {
        call.request_json = request.into();
        strip_content(&mut call);
        assert!(
            !call.request_json.contains("secret"),
            "{}",
            call.request_json
        );
        let stripped: serde_json::Value = serde_json::from_str(&call.request_json).unwrap();
        assert_eq!(stripped, expected);
    }
}
