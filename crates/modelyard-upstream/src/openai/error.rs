//! Upstream error bodies, read for the client and the call log.

/// Reads an upstream error body: the OpenAI envelope's `error.message`,
/// `error.type` and `error.code` when present, else the body text
/// (truncated to `max_chars`).
pub fn upstream_error_message(
    body: &[u8],
    max_chars: usize,
) -> (String, Option<String>, Option<serde_json::Value>) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let error = value.get("error").unwrap_or(&value);
        let message = error
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| error.as_str().map(str::to_owned));
        if let Some(message) = message {
            let kind = error
                .get("type")
                .and_then(|t| t.as_str())
                .map(str::to_owned);
            let code = error.get("code").cloned().filter(|c| !c.is_null());
            return (truncate(&message, max_chars), kind, code);
        }
    }
    (
        truncate(&String::from_utf8_lossy(body), max_chars),
        None,
        None,
    )
}

/// At most `max_chars` characters of `text`, marked when cut.
pub fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}… (truncated)", &text[..cut]),
        None => text.to_owned(),
    }
}
