//! OpenAI wire helpers (format: OpenAI API reference, "Create chat
//! completion", "The chat completion chunk object", "Create embeddings",
//! "Create completion" (legacy); llama.cpp server README for rerank).
//!
//! The gateway must pass bodies through untouched except the `model` field,
//! so nothing here re-serializes a whole body: the few fields that matter are
//! read with borrowed [`RawValue`]s, whose position in the input gives the
//! byte range to replace ([`splice`]).
//!
//! Files: `request.rs` (reading and editing a request: model, stream, usage
//! option, bounds, parameter rules, [`splice`]), `endpoints.rs` (the heads
//! of embeddings, rerank and legacy completion requests), `completion.rs` (a
//! non-streamed answer — chat, legacy completion, embeddings or rerank:
//! `model` rewritten, summary, usage), `stream.rs` (the streamed answer,
//! chat or legacy: chunk kinds and [`StreamAccumulator`]), `error.rs`
//! (upstream error bodies).
//!
//! [`RawValue`]: serde_json::value::RawValue

mod completion;
mod endpoints;
mod error;
pub(crate) mod request;
mod stream;

pub use completion::{rewrite_completion, AnswerSummary, CompletionError, RewrittenCompletion};
pub use endpoints::{CompletionRequestHead, EmbeddingsRequestHead, RerankRequestHead, TextInput};
pub use error::{truncate, upstream_error_message};
pub use request::{apply_param_rules, apply_param_rules_to, splice, ChatRequestHead, RequestError};
pub use stream::{
    model_json, Accepted, ChunkKind, StreamAccumulator, MAX_ANSWER_BYTES, MAX_TOOL_CALL_INDEX,
};

#[cfg(test)]
mod tests;
