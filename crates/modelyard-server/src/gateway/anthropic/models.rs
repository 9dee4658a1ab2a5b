//! `GET /v1/models` in Anthropic's list shape (Anthropic API reference,
//! "Models › List Models"), answered when the request carries an
//! `anthropic-version` header:
//!
//! ```json
//! {"data": [{"type": "model", "id": "local/smollm2", "display_name": "SmolLM2",
//!            "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active",
//!            "max_input_tokens": 8192}],
//!  "has_more": false, "first_id": "local/smollm2", "last_id": "local/smollm2"}
//! ```
//!
//! Every model is on the one page (`has_more` is always false; `limit`,
//! `before_id` and `after_id` are not read). `created_at` is when the
//! model's provider last answered discovery (RFC 3339); `max_input_tokens`
//! is the context window the catalog shows (`null` when unknown, never
//! guessed); every listed model is `active` (the SDKs' `lifecycle`).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::{json, Value};

/// One listed model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedModel {
    /// Composite id.
    pub(crate) id: String,
    /// Display name.
    pub(crate) display_name: String,
    /// Unix seconds.
    pub(crate) created_secs: u64,
    /// Context window, tokens.
    pub(crate) context_window: Option<u64>,
}

/// The list body.
pub(crate) fn list_body(models: &[ListedModel]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            let created = UNIX_EPOCH + Duration::from_secs(m.created_secs);
            json!({
                "type": "model",
                "id": m.id,
                "display_name": m.display_name,
                "created_at": humantime::format_rfc3339_seconds(created).to_string(),
                "lifecycle": "active",
                "max_input_tokens": m.context_window,
            })
        })
        .collect();
    json!({
        "data": data,
        "has_more": false,
        "first_id": models.first().map(|m| m.id.as_str()),
        "last_id": models.last().map(|m| m.id.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shape() {
        let models = vec![
            ListedModel {
                id: "a/x".into(),
                display_name: "X".into(),
                created_secs: 1_700_000_000,
                context_window: Some(4096),
            },
            ListedModel {
                id: "b/y".into(),
                display_name: "y".into(),
                created_secs: 0,
                context_window: None,
            },
        ];
        assert_eq!(
            list_body(&models),
            json!({
                "data": [
                    {"type": "model", "id": "a/x", "display_name": "X",
                     "created_at": "2023-11-14T22:13:20Z", "lifecycle": "active",
                     "max_input_tokens": 4096},
                    {"type": "model", "id": "b/y", "display_name": "y",
                     "created_at": "1970-01-01T00:00:00Z", "lifecycle": "active",
                     "max_input_tokens": null},
                ],
                "has_more": false, "first_id": "a/x", "last_id": "b/y",
            })
        );
        assert_eq!(
            list_body(&[]),
            json!({"data": [], "has_more": false, "first_id": null, "last_id": null})
        );
    }
}
