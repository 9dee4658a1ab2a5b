//! Prompt token counts without generating (Anthropic's
//! `POST /v1/messages/count_tokens`): the deployment a request to the model
//! would most likely go to ([`super::routed::likely_target`]: itself, or a
//! route's affinity pick or first usable target, [`count_target`]) counts:
//! - a provider that speaks Messages natively (kind `anthropic`, or
//!   `messages_api = true`) is asked `POST /v1/messages/count_tokens` with
//!   the client's body, `model` spliced ([`count_native_tokens`]);
//! - else, when its kind can ([`modelyard_upstream::tokens`]: llama.cpp's
//!   `/apply-template` and `/tokenize`), the chat translation of the request
//!   is counted ([`count_chat_tokens`]).
//!
//! Counts are not model calls: nothing is recorded in the call log.

use modelyard_upstream::tokens::can_count_tokens;
use modelyard_upstream::UpstreamError;
use serde_json::Value;

use crate::app::AppState;
use crate::registry::{RouteError, Target};
use crate::routing::Destination;
use crate::service::llm_call::{Endpoint, LlmCall, LlmCallError, Purpose};

/// Largest token-count answer read, bytes.
const MAX_COUNT_BODY_BYTES: usize = 64 * 1024;

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
         llama-cpp providers and providers that speak the Messages API count a prompt without \
         generating; each message's usage reports its input tokens"
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
    /// A native provider's count failed (its status and message, a
    /// deadline, a connection).
    #[error(transparent)]
    Call(#[from] LlmCallError),
}

/// The deployment that counts for `model` (the server's default when
/// `None`); `affinity` picks a route's deployment as a request would.
///
/// # Errors
/// [`CountError::Route`], [`CountError::NoTarget`].
pub fn count_target(
    app: &AppState,
    model: Option<&str>,
    affinity: Option<&str>,
) -> Result<Target, CountError> {
    let destination = app.destination(model)?;
    super::routed::likely_target(app, &destination, affinity).ok_or_else(|| {
        CountError::NoTarget(match &destination {
            Destination::Route(route) => route.name.to_string(),
            Destination::Deployment(target) => target.resolution.model_id.to_string(),
        })
    })
}

/// The prompt tokens of chat `messages` with `tools` on `target`, when its
/// kind can count.
///
/// # Errors
/// [`CountError::Unsupported`], [`CountError::Disabled`],
/// [`CountError::Upstream`].
pub async fn count_chat_tokens(
    target: &Target,
    messages: &[Value],
    tools: &[Value],
) -> Result<u64, CountError> {
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

/// The `input_tokens` a provider that speaks Messages natively counts for
/// `body` (a count-tokens request, `model` already spliced), sent with
/// `headers` added, under the provider's deadlines.
///
/// # Errors
/// [`CountError::Call`] (disabled, unreachable, deadline, a non-2xx
/// status with the upstream's message), [`CountError::Upstream`] (the
/// answer could not be read or has no `input_tokens`).
pub async fn count_native_tokens(
    target: &Target,
    body: Vec<u8>,
    headers: http::HeaderMap,
) -> Result<u64, CountError> {
    let mut call = LlmCall::from_raw_to(
        target,
        Purpose::new("count_tokens"),
        Endpoint::MessagesCountTokens,
        false,
        body,
    )?;
    call.set_headers(headers);
    let upstream = call.send().await?;
    let bytes = upstream.bytes(MAX_COUNT_BODY_BYTES).await?;
    #[derive(serde::Deserialize)]
    struct Counted {
        input_tokens: u64,
    }
    serde_json::from_slice::<Counted>(&bytes)
        .map(|c| c.input_tokens)
        .map_err(|e| {
            CountError::Upstream(UpstreamError::InvalidResponse {
                provider: target.provider.name().to_owned(),
                reason: format!("its token count has no `input_tokens`: {e}"),
            })
        })
}
