//! Counting a chat request's prompt tokens on providers that can, without
//! generating: llama.cpp renders the request with the model's chat
//! template (`POST /apply-template` with `messages` and `tools` →
//! `{"prompt": "…"}`) and tokenizes it (`POST /tokenize` with
//! `add_special: true`, as the server tokenizes a chat prompt →
//! `{"tokens": […]}`), which gives the `prompt_tokens` a chat completion of
//! the same request reports. Both go under the provider's probe deadline
//! (`timeouts.probe_ms`). Other kinds offer no such endpoints.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{redact_url, ProviderClient, UpstreamError};
use crate::kind::ProviderKind;

/// Whether providers of `kind` can count prompt tokens.
pub fn can_count_tokens(kind: ProviderKind) -> bool {
    matches!(kind, ProviderKind::LlamaCpp)
}

#[derive(Deserialize)]
struct Rendered {
    prompt: String,
}

#[derive(Deserialize)]
struct Tokens {
    tokens: Vec<serde::de::IgnoredAny>,
}

impl ProviderClient {
    /// The prompt tokens of a chat request (`messages`, and `tools` when
    /// not empty) on a llama.cpp server (see the [module docs](self)).
    ///
    /// # Errors
    /// Any [`UpstreamError`] of the two requests; an answer without
    /// `prompt` / `tokens` is [`UpstreamError::InvalidResponse`].
    pub async fn count_prompt_tokens(
        &self,
        messages: &[Value],
        tools: &[Value],
    ) -> Result<u64, UpstreamError> {
        let mut request = json!({"messages": messages});
        if !tools.is_empty() {
            request["tools"] = Value::Array(tools.to_vec());
        }
        let url = format!("{}/apply-template", self.server_root());
        let rendered: Rendered = self.probe_as(&url, &request).await?;
        let url = format!("{}/tokenize", self.server_root());
        let body = json!({"content": rendered.prompt, "add_special": true});
        let tokens: Tokens = self.probe_as(&url, &body).await?;
        Ok(tokens.tokens.len() as u64)
    }

    async fn probe_as<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        body: &Value,
    ) -> Result<T, UpstreamError> {
        let value = self.probe_json(url, Some(body)).await?;
        serde_json::from_value(value).map_err(|e| UpstreamError::InvalidResponse {
            provider: self.name(),
            reason: format!("{} answered an unexpected shape: {e}", redact_url(url)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_llama_cpp_counts() {
        assert!(can_count_tokens(ProviderKind::LlamaCpp));
        assert!(!can_count_tokens(ProviderKind::OpenAi));
        assert!(!can_count_tokens(ProviderKind::Ollama));
    }
}
