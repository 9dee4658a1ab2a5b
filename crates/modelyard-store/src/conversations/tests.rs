use modelyard_core::conversation::ResolvedFrom;
use serde_json::Value;

use super::rows::{parse_resolved_from, resolved_from_text};
use super::ConversationFilter;

#[test]
fn resolved_from_text_matches_serde() {
    for r in [
        ResolvedFrom::Request,
        ResolvedFrom::Conversation,
        ResolvedFrom::OperationConfig,
        ResolvedFrom::ConversationConfig,
        ResolvedFrom::ServerDefault,
    ] {
        let text = resolved_from_text(r);
        assert_eq!(
            serde_json::to_value(r).expect("serialize"),
            Value::String(text.to_owned())
        );
        assert_eq!(parse_resolved_from(text).expect("parse"), r);
    }
}

#[test]
fn conversation_filter_limits() {
    let limit = |limit| {
        ConversationFilter {
            limit,
            ..ConversationFilter::default()
        }
        .effective_limit()
    };
    assert_eq!(limit(0), 50);
    assert_eq!(limit(7), 7);
    assert_eq!(limit(10_000), 200);
}
