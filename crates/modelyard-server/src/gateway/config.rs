//! A gateway request that names an LLM config: `POST /v1/chat/completions`
//! with the header `x-modelyard-llm: <config id>` is sent with what the
//! config says and the request does not — its model when the body names
//! none, each provider option the body does not set, its system prompt
//! (first) when the messages have no `system` / `developer` message, and its
//! base URL (as for a turn: `Destination::for_llm_config`). The request's
//! own fields always win. Its LLM session records the config snapshot
//! (docs/design.md#llm-configs). Without the header, nothing here runs and
//! the body is forwarded as before.

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use modelyard_core::ids::LlmConfigId;
use modelyard_store::LlmConfigRow;
use serde_json::{json, Map, Value};

use crate::app::AppState;
use crate::error::OpenAiError;

/// Request header naming the LLM config a gateway request runs with.
pub const LLM_HEADER: &str = "x-modelyard-llm";

fn invalid(message: impl Into<String>) -> OpenAiError {
    OpenAiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
}

/// The config the request names in [`LLM_HEADER`], if it names one.
///
/// # Errors
/// 400 for a header that is not a config id; 404 `llm_config_not_found`
/// for a config that does not exist (or was deleted); 503 when the store
/// cannot be read.
pub(crate) async fn named(
    app: &AppState,
    headers: &HeaderMap,
) -> Result<Option<LlmConfigRow>, OpenAiError> {
    let Some(value) = headers.get(LLM_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| invalid(format!("{LLM_HEADER} must be an LLM config id")))?;
    let id =
        LlmConfigId::parse(text.trim()).map_err(|err| invalid(format!("{LLM_HEADER}: {err}")))?;
    match app.store.get_llm_config(&app.project, id.as_str()).await {
        Ok(Some(row)) if !row.deleted => Ok(Some(row)),
        Ok(_) => Err(OpenAiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("{LLM_HEADER}: no LLM config with id {:?}", id.as_str()),
        )
        .code("llm_config_not_found")),
        Err(err) => Err(OpenAiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("cannot read LLM config {}: {err}", id.as_str()),
        )),
    }
}

/// `body` (a chat completions request, a JSON object) with what `config`
/// says and the body does not: `model`, the provider options (a config's
/// `max_tokens` is left out when the body sets `max_completion_tokens`),
/// and the system prompt as the first message when no message is a
/// `system` or `developer` one.
///
/// # Errors
/// Why the body cannot be read (not a JSON object) or written back, for a
/// 400 ([`invalid_body`]).
pub(crate) fn apply(body: &[u8], config: &LlmConfigRow) -> Result<Bytes, String> {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return Err("the request body must be a JSON object".to_owned());
    };
    if request.get("model").is_none_or(Value::is_null) {
        request.insert("model".into(), json!(config.fields.model));
    }
    let mut options = Map::new();
    config.fields.provider_options.apply_to(&mut options);
    for (key, value) in options {
        if key == "max_tokens" && request.contains_key("max_completion_tokens") {
            continue;
        }
        request.entry(key).or_insert(value);
    }
    if let Some(prompt) = &config.fields.system_prompt {
        if let Some(Value::Array(messages)) = request.get_mut("messages") {
            let instructed = messages.iter().any(|m| {
                matches!(
                    m.get("role").and_then(Value::as_str),
                    Some("system" | "developer")
                )
            });
            if !instructed {
                messages.insert(0, json!({"role": "system", "content": prompt}));
            }
        }
    }
    serde_json::to_vec(&Value::Object(request))
        .map(Bytes::from)
        .map_err(|err| format!("the request body cannot be written back: {err}"))
}

/// The 400 of a body [`apply`] cannot use.
pub(crate) fn invalid_body(reason: String) -> OpenAiError {
    invalid(reason)
}

#[cfg(test)]
mod tests {
    use modelyard_core::llm_config::{LlmSource, ProviderOptions};
    use modelyard_store::LlmConfigFields;

    use super::*;

    fn config(prompt: Option<&str>) -> LlmConfigRow {
        LlmConfigRow {
            id: "cfg".into(),
            source: LlmSource::User,
            fields: LlmConfigFields {
                display_name: "c".into(),
                model: "p/m".into(),
                system_prompt: prompt.map(str::to_owned),
                provider_options: ProviderOptions {
                    temperature: Some(0.2),
                    max_tokens: Some(30),
                    extra: Some(json!({"min_p": 0.1})),
                    ..ProviderOptions::default()
                },
                base_url: None,
            },
            preset_name: None,
            preset_version: None,
            created_at_ms: 0,
            updated_at_ms: 0,
            deleted: false,
            version: 4,
        }
    }

    fn applied(body: Value, config: &LlmConfigRow) -> Value {
        let bytes = apply(body.to_string().as_bytes(), config).expect("applied");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn the_config_fills_what_the_request_leaves_out() {
        let got = applied(
            json!({"messages": [{"role": "user", "content": "hi"}]}),
            &config(Some("Be terse.")),
        );
        assert_eq!(
            got,
            json!({"model": "p/m", "temperature": 0.2, "max_tokens": 30, "min_p": 0.1,
                   "messages": [{"role": "system", "content": "Be terse."},
                                {"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn the_requests_own_fields_win() {
        let got = applied(
            json!({"model": "q/x", "temperature": 1.0, "max_completion_tokens": 5,
                   "messages": [{"role": "developer", "content": "Mine."},
                                {"role": "user", "content": "hi"}]}),
            &config(Some("Be terse.")),
        );
        assert_eq!(
            got,
            json!({"model": "q/x", "temperature": 1.0, "max_completion_tokens": 5,
                   "min_p": 0.1,
                   "messages": [{"role": "developer", "content": "Mine."},
                                {"role": "user", "content": "hi"}]})
        );
    }

    #[test]
    fn a_body_that_is_no_object_is_refused() {
        assert!(apply(b"[1]", &config(None)).is_err());
    }
}
