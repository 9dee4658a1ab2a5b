//! One LLM call: `target + request + limits → send → streamed chunks (or one
//! body) → outcome + call record`, the one path every model call of the
//! server takes — the gateway, a turn's chat steps, the advisor, titles and
//! compactions.
//!
//! What is shared:
//! - the request: the server's own requests are composed by [`compose`]
//!   (options first, routing's fields last so nothing overrides them); the
//!   gateway's body is the client's bytes with `model` spliced in. Either way
//!   [`LlmCall::new`] / [`LlmCall::from_raw`] apply the provider's
//!   `set_params` / `strip_params` ([`apply_param_rules`], the one place
//!   that does), and only when the provider has rules does the gateway's
//!   body become a JSON tree. Provider `headers` and `proxy_url` are in the
//!   provider's client ([`modelyard_upstream::ProviderClient`]), so every
//!   call carries them; a custom base URL's client (`ProviderClient::guarded`)
//!   has none by design, and no rules.
//! - sending ([`LlmCall::send`]) to the call's [`Endpoint`] (chat
//!   completions, or the gateway's embeddings / rerank / legacy completions
//!   pass-throughs): the provider's deadlines (in the client),
//!   a disabled provider, a non-2xx answer read at most
//!   [`MAX_ERROR_BODY_BYTES`] and described with the 401/403 (the
//!   provider's credentials) and 3xx (redirects are not followed) wording.
//! - reading: [`LlmCall::read_stream`] (SSE, one event at most
//!   `limits.max_sse_event_bytes`, accumulated) or [`LlmCall::read_body`]
//!   (one answer, at most [`MAX_ANSWER_BYTES`]); the gateway's streamed
//!   pass-through keeps its own loop and uses the same messages
//!   ([`LlmCallError`]).
//! - the record ([`LlmCall::record`]): one
//!   [`CallRecord`](crate::recorder::CallRecord) per call.
//!
//! No HTTP framework here: errors are [`LlmCallError`], which each front maps
//! to its own shape (the gateway: OpenAI envelopes).
//!
//! The parts: `request` builds a call (its purpose, endpoint and body),
//! `send` sends it and reads the answer, `record` counts it and writes its
//! record; the errors are in `error`.

use std::sync::Arc;

use bytes::Bytes;

use crate::registry::Target;
use crate::routing::Busy;

mod error;
mod record;
mod request;
mod send;

/// Largest non-streamed upstream answer read, bytes.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Largest upstream error body read, bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
/// Characters of an upstream error message kept.
pub const MAX_ERROR_CHARS: usize = 2_000;

pub use error::{status_message, LlmCallError, UpstreamStatus};

pub use request::{apply_param_rules, compose, has_param_rules, Endpoint, Purpose};

/// One call to a model, from its request to its record.
#[derive(Debug)]
pub struct LlmCall {
    target: Target,
    purpose: Purpose,
    /// Where it is posted: chat completions unless built by
    /// [`LlmCall::from_raw_to`].
    endpoint: Endpoint,
    stream: bool,
    request: Bytes,
    sent_at_ms: i64,
    status: Option<u16>,
    first_token_at_ms: Option<i64>,
    /// Attempt number within its request, from 1.
    attempt: u32,
    /// The route the request named.
    route: Option<Arc<str>>,
    /// The id answers name as their `model` (the route's name), when not
    /// the deployment's composite id.
    client_model: Option<Arc<str>>,
    /// Held while the call is in flight (`least-busy`, time to first token).
    busy: Option<Busy>,
    /// Where the call's duration, tokens and timings are recorded.
    metrics: Option<Arc<crate::telemetry::CallHandles>>,
    /// Its span, when tracing is on ([`crate::traces`]).
    span: Option<crate::traces::CallSpan>,
    /// Headers added to this request ([`Self::set_headers`]).
    headers: Option<http::HeaderMap>,
}

impl LlmCall {
    /// Adds `headers` to this call's request (the Messages pass-through
    /// forwards the client's `anthropic-version` / `anthropic-beta`); one
    /// of the same name as a provider header replaces it for this request.
    pub fn set_headers(&mut self, headers: http::HeaderMap) {
        self.headers = (!headers.is_empty()).then_some(headers);
    }

    /// Where it is posted.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Its operation (`gateway`, `chat`, …).
    pub fn operation(&self) -> &str {
        &self.purpose.operation
    }

    /// Marks this call as attempt `attempt` of a request that named
    /// `route` (whose name answers then carry as `model`; its fallbacks'
    /// attempts included), in flight on its deployment while `busy` is
    /// held.
    pub fn routed(&mut self, attempt: u32, route: Option<Arc<str>>, busy: Busy) {
        self.attempt = attempt;
        self.client_model.clone_from(&route);
        self.route = route;
        self.busy = Some(busy);
    }

    /// The attempt number within its request, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The id answers carry as `model`: the route's name for a routed
    /// request, else the deployment's composite id.
    pub fn client_model(&self) -> String {
        match &self.client_model {
            Some(name) => name.to_string(),
            None => self.target.resolution.model_id.to_string(),
        }
    }

    fn first_output(&mut self, at_ms: i64) {
        self.first_token_at_ms = Some(at_ms);
        if let Some(busy) = self.busy.as_mut() {
            busy.observe_ttft(at_ms - self.sent_at_ms);
        }
    }

    /// Where it goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The request body as sent.
    pub fn request(&self) -> &Bytes {
        &self.request
    }

    /// Send time, unix ms.
    pub fn sent_at_ms(&self) -> i64 {
        self.sent_at_ms
    }

    /// The provider's HTTP status, once it answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// When the first output arrived, unix ms.
    pub fn first_token_at_ms(&self) -> Option<i64> {
        self.first_token_at_ms
    }

    /// Sets when the first output arrived (the gateway's pass-through does
    /// its own reading).
    pub fn set_first_token_at_ms(&mut self, at_ms: Option<i64>) {
        if let Some(at_ms) = at_ms {
            self.first_output(at_ms);
        }
    }
}

#[cfg(test)]
mod tests;
