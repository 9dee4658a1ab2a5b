//! Prompt token counts without generating (Anthropic's
//! `POST /v1/messages/count_tokens`): the deployment a request to the model
//! would most likely go to ([`super::routed::likely_target`]: itself, or a
//! route's affinity pick or first usable target) counts, when its kind can
//! ([`modelyard_upstream::tokens`]: llama.cpp's `/apply-template` and
//! `/tokenize`).

use modelyard_upstream::tokens::can_count_tokens;
use modelyard_upstream::UpstreamError;
use serde_json::Value;

use crate::app::AppState;
use crate::registry::RouteError;
use crate::routing::Destination;

/// Why no count came back.
#[derive(Debug, thiserror::Error)]
pub enum CountError {
    /// The model does not route (unknown, ambiguous, disabled, none).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// Every target of the route is unavailable now.
    #[error("no deployment of route '{0}' can serve now")]
    NoTarget(String),
    /// The deployment's provider kind has no token count.
    #[error(
        "counting tokens is not supported for provider '{provider}' (kind {kind}): only \
         llama-cpp providers count a prompt without generating; each message's usage reports \
         its input tokens"
    )]
    Unsupported {
        /// Provider name.
        provider: String,
        /// Its kind.
        kind: &'static str,
    },
    /// The provider is disabled.
    #[error("provider '{0}' is disabled")]
    Disabled(String),
    /// The provider failed to count.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// The prompt tokens of chat `messages` with `tools` for `model` (the
/// server's default when `None`); `affinity` picks a route's deployment as
/// a request would.
///
/// # Errors
/// [`CountError`].
pub async fn count_prompt_tokens(
    app: &AppState,
    model: Option<&str>,
    messages: &[Value],
    tools: &[Value],
    affinity: Option<&str>,
) -> Result<u64, CountError> {
    let destination = app.destination(model)?;
    let target = super::routed::likely_target(app, &destination, affinity).ok_or_else(|| {
        CountError::NoTarget(match &destination {
            Destination::Route(route) => route.name.to_string(),
            Destination::Deployment(target) => target.resolution.model_id.to_string(),
        })
    })?;
    let provider = &target.provider;
    let kind = provider.config.kind;
    if !can_count_tokens(kind) {
        return Err(CountError::Unsupported {
            provider: provider.name().to_owned(),
            kind: kind.as_str(),
        });
    }
    let client = provider
        .client
        .as_ref()
        .ok_or_else(|| CountError::Disabled(provider.name().to_owned()))?;
    Ok(client.count_prompt_tokens(messages, tools).await?)
}
