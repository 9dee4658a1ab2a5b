//! Redaction of common secret shapes in stored text (`[security]
//! redact_secrets`): provider API keys (`sk-…`, `sk-ant-…`, `AIza…`,
//! `AKIA…`, GitHub `ghp_…` / `github_pat_…`, Slack `xox?-…`), Modelyard
//! keys (`mk_…`), `Bearer …` tokens and PEM private keys become
//! `[REDACTED]`. A best-effort pass for accidents (a key pasted into a
//! prompt), not a guarantee.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

static SECRETS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        r"|\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{20,}",
        r"|\bmk_[A-Za-z0-9]{20,}",
        r"|\bAIza[0-9A-Za-z_\-]{35}",
        r"|\bAKIA[0-9A-Z]{16}\b",
        r"|\bgh[pousr]_[A-Za-z0-9]{36,}",
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}",
        r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        r"|(?:[Bb]earer|BEARER)\s+[A-Za-z0-9_\-\.=+/]{16,}",
    ))
    .unwrap_or_else(|e| unreachable!("the secret patterns are valid: {e}"))
});

/// `text` with every secret shape replaced by [`REDACTED`]; borrowed when
/// there is none.
pub fn redact(text: &str) -> Cow<'_, str> {
    SECRETS.replace_all(text, REDACTED)
}

/// Redacts the text an event stores: user and imported message content,
/// assistant text, reasoning and tool-call arguments, tool results, partial
/// text, titles and compaction summaries. Other fields (ids, models) are left alone.
pub fn payload(payload: &mut modelyard_core::conversation::EventPayload) {
    use modelyard_core::conversation::{EventPayload, Part};
    fn text(s: &mut String) {
        if let Cow::Owned(clean) = redact(s) {
            *s = clean;
        }
    }
    fn content(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => text(s),
            serde_json::Value::Array(parts) => {
                for part in parts {
                    if let Some(serde_json::Value::String(s)) = part.get_mut("text") {
                        text(s);
                    }
                }
            }
            _ => {}
        }
    }
    fn parts(parts: &mut [Part]) {
        for part in parts {
            match part {
                Part::Text { text: t } | Part::Reasoning { text: t } => text(t),
                Part::ToolCall { arguments, .. } => text(arguments),
                Part::ToolResult { .. } => {}
            }
        }
    }
    match payload {
        EventPayload::UserMessage { content: c, .. } => content(c),
        EventPayload::AssistantMessage { parts: p, .. } => parts(p),
        EventPayload::ToolMessage { content: c, .. } => text(c),
        EventPayload::MessagesImported { messages, .. } => {
            for m in messages {
                content(&mut m.content);
                parts(&mut m.parts);
            }
        }
        EventPayload::TurnInterrupted {
            partial_text: Some(t),
            ..
        } => text(t),
        EventPayload::ConversationCompacted { summary, .. } => text(summary),
        EventPayload::ConversationUpdated {
            title: Some(title), ..
        } => text(title),
        _ => {}
    }
}

/// Applies [`payload`] to each of `payloads` when `on`.
pub fn payloads(on: bool, payloads: &mut [modelyard_core::conversation::EventPayload]) {
    if on {
        payloads.iter_mut().for_each(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_secret_shapes_are_replaced_and_the_rest_is_kept() {
        let cases = [
            (
                "my key is sk-abcdefghijklmnopqrstuvwx1234 ok",
                "my key is [REDACTED] ok",
            ),
            ("sk-ant-api03-AAAAAAAAAAAAAAAAAAAAAAAA", "[REDACTED]"),
            (
                "Authorization: Bearer abcdefghijklmnop1234",
                "Authorization: [REDACTED]",
            ),
            ("AKIAIOSFODNN7EXAMPLE and more", "[REDACTED] and more"),
            ("ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "[REDACTED]"),
            ("mk_0123456789abcdef0123456789abcdef", "[REDACTED]"),
            (
                "x -----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- y",
                "x [REDACTED] y",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
        for clean in ["task-1234", "a skeleton key", "sk-short", "bearer of news"] {
            assert!(matches!(redact(clean), Cow::Borrowed(_)), "{clean}");
        }
    }
}
