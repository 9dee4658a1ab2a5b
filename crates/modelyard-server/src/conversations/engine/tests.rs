//! Unit tests of the turn engine.

use modelyard_core::conversation::MessageRole;
use modelyard_core::conversation::{MessageRecord, TokenUsage};
use modelyard_core::llm_config::ReasoningEffort;
use modelyard_core::llm_config::{LlmSource, ProviderOptions};
use modelyard_store::{LlmConfigFields, LlmConfigRow};
use serde_json::json;

use super::request::request_body;

fn user(text: &str) -> MessageRecord {
    MessageRecord {
        id: "m".into(),
        conversation_id: "c".into(),
        turn_id: "t".into(),
        role: MessageRole::User,
        content: json!(text),
        parts: Vec::new(),
        model_id: None,
        usage: TokenUsage::default(),
        finish_reason: None,
        seq: 1,
        created_at_ms: 0,
    }
}

#[test]
fn the_config_supplies_system_prompt_and_options() {
    let config = LlmConfigRow {
        id: "cfg".into(),
        source: LlmSource::User,
        fields: LlmConfigFields {
            display_name: "x".into(),
            model: "p/m".into(),
            system_prompt: Some("Be terse.".into()),
            provider_options: ProviderOptions {
                temperature: Some(0.1),
                max_tokens: Some(9),
                reasoning_effort: Some("low".into()),
                extra: Some(json!({"min_p": 0.2, "stream": false})),
                ..ProviderOptions::default()
            },
            base_url: None,
        },
        preset_name: None,
        preset_version: None,
        created_at_ms: 0,
        updated_at_ms: 0,
        deleted: false,
        version: 1,
    };
    let body = request_body(
        &[user("hi")],
        Some(&config),
        None,
        None,
        &[],
        &Default::default(),
    );
    assert_eq!(
        body,
        json!({
            "min_p": 0.2, "temperature": 0.1, "max_tokens": 9, "reasoning_effort": "low",
            "model": "",
            "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
            "stream": true, "stream_options": {"include_usage": true},
        })
    );
    // The conversation's own setting wins over the config's.
    let body = request_body(
        &[user("hi")],
        Some(&config),
        Some(ReasoningEffort::High),
        None,
        &[],
        &Default::default(),
    );
    assert_eq!(body["reasoning_effort"], "high");
    // A run's overrides (the Responses front's instructions and sampling
    // fields): its instructions replace the config's system prompt, its
    // options win over the config's.
    let overrides = super::RunOverrides {
        instructions: Some("Only this run.".into()),
        options: json!({"temperature": 0.7, "top_p": 0.5})
            .as_object()
            .unwrap()
            .clone(),
        request_id: None,
    };
    let body = request_body(&[user("hi")], Some(&config), None, None, &[], &overrides);
    assert_eq!(body["temperature"], 0.7);
    assert_eq!(body["top_p"], 0.5);
    assert_eq!(body["max_tokens"], 9);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Only this run."})
    );
    // After a compaction through seq 1: the summary replaces message 1.
    let mut later = user("later");
    later.seq = 2;
    let body = request_body(
        &[user("hi"), later],
        None,
        None,
        Some((1, "S")),
        &[],
        &Default::default(),
    );
    assert_eq!(
        body["messages"],
        json!([{"role": "system", "content": "Summary of the earlier conversation: S"},
               {"role": "user", "content": "later"}])
    );
    // Without a config: only routing's fields and the messages.
    let body = request_body(&[user("hi")], None, None, None, &[], &Default::default());
    assert_eq!(
        body,
        json!({"model": "", "messages": [{"role": "user", "content": "hi"}],
               "stream": true, "stream_options": {"include_usage": true}})
    );
}
