//! Anthropic Messages wire helpers (Anthropic API reference, "Messages",
//! "Streaming Messages", "Count Message tokens"), for providers that speak
//! Messages natively (kind `anthropic`, or a provider with
//! `messages_api = true`): the gateway passes such requests and answers
//! through as they are, so nothing here re-serializes a whole body.
//!
//! Files: `request.rs` (a Messages request's few routing fields read with
//! borrowed `RawValue`s, `model` spliced by byte range), `message.rs` (a
//! non-streamed message: `model` rewritten, summary and usage for the call
//! log), `stream.rs` (the named SSE events: `message_start`'s `model`
//! rewritten, usage and content accumulated for the call log).
//!
//! Usage, as the call log keeps it (OpenAI's meanings,
//! [`modelyard_core::Usage`]): `prompt_tokens` = `input_tokens` +
//! `cache_read_input_tokens` + `cache_creation_input_tokens` (Anthropic's
//! `input_tokens` leave out the tokens read from or written to the cache),
//! `cached_prompt_tokens` = `cache_read_input_tokens`, `completion_tokens` =
//! `output_tokens`.

mod message;
mod request;
mod stream;

pub use message::rewrite_message;
pub use request::MessagesRequestHead;
pub use stream::{MessageEvent, MessagesAccumulator};

use modelyard_core::Usage;
use serde::Deserialize;

/// Anthropic's `usage` object (every field optional: `message_delta`
/// carries only what changed).
#[derive(Deserialize, Default, Debug, Clone, Copy)]
pub(crate) struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

impl WireUsage {
    /// Fields reported in `later` replace these (counts in `message_delta`
    /// are cumulative).
    pub(crate) fn merge(&mut self, later: WireUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
    }

    /// In the call log's terms (see the [module docs](self)).
    pub(crate) fn usage(&self) -> Usage {
        Usage::from_anthropic(
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
            self.output_tokens,
        )
    }
}

#[cfg(test)]
mod tests;
