//! [`RoutedError`]: why a routed request found no answer.

use crate::service::llm_call::LlmCallError;

/// Why a request found no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoutedError {
    /// The last attempt's error: the request named one deployment, or the
    /// failure is not one that is retried (the client's own mistake, say).
    #[error(transparent)]
    Call(LlmCallError),
    /// No deployment of the route (or its fallbacks) could serve.
    #[error("{}", unavailable_message(.model, .reasons))]
    Unavailable {
        /// The id the request named.
        model: String,
        /// Per deployment (composite id), why it did not serve; in the
        /// order they were tried or skipped.
        reasons: Vec<(String, String)>,
        /// When the soonest cooling-down target is back, ms from now.
        retry_after_ms: Option<u64>,
    },
}

fn unavailable_message(model: &str, reasons: &[(String, String)]) -> String {
    let mut message = format!("no deployment of '{model}' could serve the request");
    for (i, (deployment, reason)) in reasons.iter().enumerate() {
        message.push_str(if i == 0 { ": " } else { "; " });
        message.push_str(deployment);
        message.push_str(": ");
        message.push_str(reason);
    }
    message
}

impl RoutedError {
    /// `Retry-After` for the client, seconds (rounded up), when known.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RoutedError::Unavailable {
                retry_after_ms: Some(ms),
                ..
            } => Some(ms.div_ceil(1000).max(1)),
            _ => None,
        }
    }
}
