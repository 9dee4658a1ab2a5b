use serde_json::json;

use super::*;

mod arena;

fn ev(seq: i64, payload: EventPayload) -> Event {
    Event {
        conversation_id: "c1".into(),
        seq,
        at_ms: 1_000 + seq,
        payload,
    }
}

fn created() -> EventPayload {
    EventPayload::ConversationCreated {
        title: Some("t".into()),
        parent_id: None,
        model: Some("a/x".into()),
        cwd: None,
        reasoning_effort: None,
        advisor: false,
        metadata: json!({"k": 1}),
        llm_id: None,
        llm_overrides: Default::default(),
    }
}

fn turn(seq: i64, id: &str) -> Event {
    ev(
        seq,
        EventPayload::TurnStarted {
            turn_id: id.into(),
            operation: "chat".into(),
            model_id: "a/x".into(),
            resolved_from: ResolvedFrom::Conversation,
            llm_config_id: None,
            client_tools: None,
        },
    )
}

fn answer(seq: i64, turn: &str, model: &str, tokens: u64) -> Event {
    ev(
        seq,
        EventPayload::AssistantMessage {
            message_id: format!("m{seq}"),
            turn_id: turn.into(),
            parts: vec![
                Part::Reasoning { text: "hm".into() },
                Part::Text {
                    text: "Hello".into(),
                },
            ],
            model_id: model.into(),
            usage: TokenUsage {
                prompt_tokens: Some(tokens),
                completion_tokens: Some(2),
                total_tokens: Some(tokens + 2),
                ..Default::default()
            },
            finish_reason: Some("stop".into()),
        },
    )
}

#[test]
fn fold_materializes_turns_messages_and_totals() {
    let log = vec![
        ev(1, created()),
        turn(2, "t1"),
        ev(
            3,
            EventPayload::UserMessage {
                message_id: "u1".into(),
                turn_id: "t1".into(),
                content: json!("hi"),
            },
        ),
        answer(4, "t1", "a/x", 10),
        ev(
            5,
            EventPayload::TurnCompleted {
                turn_id: "t1".into(),
            },
        ),
        ev(
            6,
            EventPayload::ModelSelected {
                model: "b/y".into(),
                previous: Some("a/x".into()),
                source: SelectionSource::TurnOverride,
                verified: None,
            },
        ),
        turn(7, "t2"),
        answer(8, "t2", "b/y", 20),
        ev(
            9,
            EventPayload::TurnFailed {
                turn_id: "t2".into(),
                error: "boom".into(),
            },
        ),
    ];
    let (c, turns, messages) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(c.model.as_deref(), Some("b/y"));
    assert_eq!(c.latest_model_id.as_deref(), Some("b/y"));
    assert_eq!(
        c.totals,
        TokenTotals {
            prompt_tokens: 30,
            completion_tokens: 4,
            reasoning_tokens: 0,
            cached_prompt_tokens: 0,
            total_tokens: 34,
            cost_nusd: None,
        }
    );
    assert_eq!(c.running_turn_id, None);
    assert_eq!(c.last_seq, 9);
    assert_eq!(
        turns.iter().map(|t| t.status).collect::<Vec<_>>(),
        vec![TurnStatus::Completed, TurnStatus::Failed]
    );
    assert_eq!(turns[1].error.as_deref(), Some("boom"));
    assert_eq!(turns[1].totals.prompt_tokens, 20);
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[1].content, json!("Hello"));
    assert_eq!(messages[1].model_id.as_deref(), Some("a/x"));
}

#[test]
fn invariants_are_enforced() {
    let mut c = None;
    assert_eq!(
        apply(&mut c, None, &turn(1, "t")),
        Err(ApplyError::NoConversation("c1".into()))
    );
    apply(&mut c, None, &ev(1, created())).unwrap();
    assert!(matches!(
        apply(&mut c, None, &ev(1, created())),
        Err(ApplyError::AlreadyExists(_))
    ));
    assert_eq!(
        apply(&mut c, None, &turn(3, "t")),
        Err(ApplyError::SeqGap { last: 1, got: 3 })
    );
    let changes = apply(&mut c, None, &turn(2, "t")).unwrap();
    let running = changes.turn.unwrap();
    assert_eq!(
        apply(&mut c, Some(&running), &turn(3, "u")),
        Err(ApplyError::TurnRunning {
            running: "t".into()
        })
    );
    assert_eq!(
        apply(
            &mut c,
            Some(&running),
            &ev(
                3,
                EventPayload::TurnCompleted {
                    turn_id: "other".into()
                }
            )
        ),
        Err(ApplyError::TurnNotRunning("other".into()))
    );
}

#[test]
fn payloads_round_trip_with_dotted_types_and_old_payloads_stay_readable() {
    let event = answer(4, "t1", "a/x", 1);
    let text = serde_json::to_string(&event.payload).unwrap();
    assert!(
        text.starts_with(r#"{"type":"message.assistant","messageId":"m4","turnId":"t1""#),
        "{text}"
    );
    let back: EventPayload = serde_json::from_str(&text).unwrap();
    assert_eq!(back, event.payload);
    // A version-1 payload without the optional fields still reads.
    let old: EventPayload = serde_json::from_str(r#"{"type":"turn.started","turnId":"t","operation":"chat","modelId":"a/x","resolvedFrom":"request"}"#).unwrap();
    assert_eq!(old.turn_id(), Some("t"));
    // A payload stored before the config reference was named `llmId`.
    let old: EventPayload = serde_json::from_str(r#"{"type":"turn.started","turnId":"t","operation":"chat","modelId":"a/x","resolvedFrom":"operationConfig","llmConfigId":"cfg1"}"#).unwrap();
    let EventPayload::TurnStarted { llm_config_id, .. } = &old else {
        panic!("{old:?}");
    };
    assert_eq!(llm_config_id.as_deref(), Some("cfg1"));
    let text = serde_json::to_string(&old).unwrap();
    assert!(text.contains(r#""llmId":"cfg1""#), "{text}");
    assert!(!text.contains("llmConfigId"), "{text}");
    let settings: EventPayload =
        serde_json::from_str(r#"{"type":"settings.changed","cwd":null}"#).unwrap();
    assert_eq!(
        settings,
        EventPayload::SettingsChanged {
            cwd: Some(None),
            reasoning_effort: None,
            advisor: None,
        }
    );
    assert_eq!(
        serde_json::to_string(&settings).unwrap(),
        r#"{"type":"settings.changed","cwd":null}"#
    );
}

#[test]
fn compaction_records_summary_and_covered_seq() {
    let compacted = EventPayload::ConversationCompacted {
        summary_message_id: "s1".into(),
        summary: "they said hi".into(),
        up_to_seq: 3,
        model_id: "a/x".into(),
    };
    assert_eq!(compacted.event_type(), "conversation.compacted");
    assert_eq!(compacted.turn_id(), None);
    let text = serde_json::to_string(&compacted).unwrap();
    assert_eq!(
        text,
        r#"{"type":"conversation.compacted","summaryMessageId":"s1","summary":"they said hi","upToSeq":3,"modelId":"a/x"}"#
    );
    assert_eq!(
        serde_json::from_str::<EventPayload>(&text).unwrap(),
        compacted
    );
    let (c, _, _) = fold(&[
        ev(1, created()),
        turn(2, "t1"),
        answer(3, "t1", "a/x", 1),
        ev(
            4,
            EventPayload::TurnCompleted {
                turn_id: "t1".into(),
            },
        ),
        ev(5, compacted),
    ])
    .unwrap();
    let c = c.unwrap();
    assert_eq!(c.compacted_through_seq, Some(3));
    assert_eq!(c.summary.as_deref(), Some("they said hi"));
    assert_eq!(c.last_seq, 5);
    // Records stored before compaction existed still read.
    let (fresh, _, _) = fold(&[ev(1, created())]).unwrap();
    let mut value = serde_json::to_value(fresh.unwrap()).unwrap();
    value.as_object_mut().unwrap().remove("compactedThroughSeq");
    value.as_object_mut().unwrap().remove("summary");
    let back: ConversationRecord = serde_json::from_value(value).unwrap();
    assert_eq!(back.compacted_through_seq, None);
}

#[test]
fn tool_steps_requires_action_and_resume() {
    let call = |id: &str, name: &str| Part::ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: "{}".into(),
    };
    let tool = |seq: i64, id: &str, name: &str, usage: Option<u64>| {
        ev(
            seq,
            EventPayload::ToolMessage {
                message_id: format!("m{seq}"),
                turn_id: "t1".into(),
                tool_call_id: id.into(),
                name: name.into(),
                content: "{\"type\":\"advice\"}".into(),
                is_error: false,
                model_id: usage.map(|_| "b/advisor".into()),
                usage: usage.map(|n| TokenUsage {
                    prompt_tokens: Some(n),
                    completion_tokens: Some(1),
                    ..Default::default()
                }),
            },
        )
    };
    let mut log = vec![ev(1, created()), turn(2, "t1")];
    log.push(ev(
        3,
        EventPayload::AssistantMessage {
            message_id: "m3".into(),
            turn_id: "t1".into(),
            parts: vec![call("c1", "advisor"), call("c2", "get_weather")],
            model_id: "a/x".into(),
            usage: TokenUsage {
                prompt_tokens: Some(10),
                completion_tokens: Some(2),
                ..Default::default()
            },
            finish_reason: Some("tool_calls".into()),
        },
    ));
    log.push(tool(4, "c1", "advisor", Some(100)));
    log.push(ev(
        5,
        EventPayload::TurnRequiresAction {
            turn_id: "t1".into(),
            tool_calls: vec![ToolCallRef {
                id: "c2".into(),
                name: "get_weather".into(),
                arguments: "{}".into(),
            }],
        },
    ));
    let (c, turns, messages) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(turns[0].status, TurnStatus::RequiresAction);
    // The advisor's call was answered in the run; the client's waits.
    assert_eq!(
        turns[0].pending_tool_calls,
        vec![crate::conversation::PendingToolCall {
            id: "c2".into(),
            name: "get_weather".into()
        }]
    );
    // The turn still holds the conversation: a new turn is refused.
    assert_eq!(c.running_turn_id.as_deref(), Some("t1"));
    let mut refused = log.clone();
    refused.push(turn(6, "t2"));
    assert!(matches!(
        fold(&refused),
        Err(ApplyError::TurnRunning { .. })
    ));
    // A result cannot arrive before the turn is resumed.
    let mut early = log.clone();
    early.push(tool(6, "c2", "get_weather", None));
    assert!(matches!(fold(&early), Err(ApplyError::TurnNotRunning(_))));
    // The advisor's tokens count in both totals; its model does not become
    // the conversation's latest model.
    assert_eq!(c.totals.prompt_tokens, 110);
    assert_eq!(c.totals.completion_tokens, 3);
    assert_eq!(turns[0].totals.prompt_tokens, 110);
    assert_eq!(c.latest_model_id.as_deref(), Some("a/x"));
    assert_eq!(messages[1].role, crate::conversation::MessageRole::Tool);
    assert_eq!(messages[1].model_id.as_deref(), Some("b/advisor"));
    assert_eq!(
        messages[1].parts,
        vec![Part::ToolResult {
            tool_call_id: "c1".into(),
            name: "advisor".into(),
            is_error: false
        }]
    );

    log.push(ev(
        6,
        EventPayload::TurnResumed {
            turn_id: "t1".into(),
        },
    ));
    log.push(tool(7, "c2", "get_weather", None));
    log.push(answer(8, "t1", "a/x", 5));
    log.push(ev(
        9,
        EventPayload::TurnCompleted {
            turn_id: "t1".into(),
        },
    ));
    let (c, turns, messages) = fold(&log).unwrap();
    assert_eq!(turns[0].status, TurnStatus::Completed);
    assert!(turns[0].pending_tool_calls.is_empty());
    assert_eq!(c.unwrap().running_turn_id, None);
    assert_eq!(messages.len(), 4);
    // Resuming a turn that does not wait is refused.
    let mut twice = log[..7].to_vec();
    twice.push(ev(
        8,
        EventPayload::TurnResumed {
            turn_id: "t1".into(),
        },
    ));
    assert!(matches!(fold(&twice), Err(ApplyError::TurnNotWaiting(_))));
    // A waiting turn can be cancelled.
    let mut cancelled = log[..5].to_vec();
    cancelled.push(ev(
        6,
        EventPayload::TurnCancelled {
            turn_id: "t1".into(),
        },
    ));
    let (c, turns, _) = fold(&cancelled).unwrap();
    assert_eq!(turns[0].status, TurnStatus::Cancelled);
    assert_eq!(c.unwrap().running_turn_id, None);
}

#[test]
fn a_turn_keeps_its_client_tools_from_turn_started() {
    let tools = json!([{"type": "function", "function": {"name": "get_weather"}}]);
    let log = vec![
        ev(1, created()),
        ev(
            2,
            EventPayload::TurnStarted {
                turn_id: "t1".into(),
                operation: "chat".into(),
                model_id: "a/x".into(),
                resolved_from: ResolvedFrom::Request,
                llm_config_id: None,
                client_tools: Some(tools.clone()),
            },
        ),
        turn_end(3),
    ];
    let (_, turns, _) = fold(&log).unwrap();
    assert_eq!(
        serde_json::Value::Array(turns[0].client_tools.clone()),
        tools
    );
    // Without any, the turn has none.
    let (_, turns, _) = fold(&[ev(1, created()), turn(2, "t1")]).unwrap();
    assert!(turns[0].client_tools.is_empty());
}

fn turn_end(seq: i64) -> Event {
    ev(
        seq,
        EventPayload::TurnCompleted {
            turn_id: "t1".into(),
        },
    )
}

#[test]
fn token_totals_use_the_usage_names_and_read_the_old_ones() {
    let totals = TokenTotals {
        prompt_tokens: 1,
        completion_tokens: 2,
        reasoning_tokens: 3,
        cached_prompt_tokens: 4,
        total_tokens: 5,
        cost_nusd: None,
    };
    let new = json!({"promptTokens": 1, "completionTokens": 2, "reasoningTokens": 3,
                     "cachedPromptTokens": 4, "totalTokens": 5});
    assert_eq!(serde_json::to_value(totals).unwrap(), new);
    let old = json!({"input": 1, "output": 2, "reasoning": 3, "cachedInput": 4, "total": 5});
    assert_eq!(serde_json::from_value::<TokenTotals>(old).unwrap(), totals);
    assert_eq!(serde_json::from_value::<TokenTotals>(new).unwrap(), totals);
}

#[test]
fn the_latest_model_and_context_size_move_with_chat_turns_only() {
    let started = |seq: i64, id: &str, operation: &str, model: &str| {
        ev(
            seq,
            EventPayload::TurnStarted {
                turn_id: id.into(),
                operation: operation.into(),
                model_id: model.into(),
                resolved_from: ResolvedFrom::Request,
                llm_config_id: None,
                client_tools: None,
            },
        )
    };
    let completed =
        |seq: i64, id: &str| ev(seq, EventPayload::TurnCompleted { turn_id: id.into() });
    let mut log = vec![ev(1, created()), started(2, "t1", "chat", "route-a")];
    // A chat turn moves the latest model as it starts.
    let (c, _, _) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(c.latest_model_id.as_deref(), Some("route-a"));
    assert_eq!(c.context_tokens, None);
    // Its answer names the deployment that served and the prompt size.
    log.push(answer(3, "t1", "a/x", 30));
    log.push(completed(4, "t1"));
    let (c, _, _) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(c.latest_model_id.as_deref(), Some("a/x"));
    assert_eq!(c.context_tokens, Some(30));
    // A title turn moves neither, at its start or its answer.
    log.push(started(5, "t2", "title", "b/y"));
    let (c, _, _) = fold(&log).unwrap();
    assert_eq!(c.unwrap().latest_model_id.as_deref(), Some("a/x"));
    log.push(answer(6, "t2", "b/y", 99));
    log.push(completed(7, "t2"));
    let (c, _, _) = fold(&log).unwrap();
    let c = c.unwrap();
    assert_eq!(c.latest_model_id.as_deref(), Some("a/x"));
    assert_eq!(c.context_tokens, Some(30));
    assert_eq!(c.totals.prompt_tokens, 129, "its tokens still count");
}
