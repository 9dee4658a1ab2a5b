//! Talking to model providers. The only crate that knows `reqwest`.
//!
//! - [`kind`]: provider kinds (the seam where new kinds plug in).
//! - [`client`]: one HTTP client per provider, with its timeouts and
//!   credentials; returns [`client::UpstreamResponse`] whose chunks are read
//!   under idle and total deadlines.
//! - [`discovery`]: per-kind probes: model listing, health, loaded state,
//!   context windows.
//! - [`sse`]: an incremental Server-Sent Events decoder (WHATWG HTML §9.2).
//! - [`openai`]: OpenAI chat-completion wire helpers: read the few fields the
//!   gateway needs without re-serializing the rest, splice the `model` field,
//!   accumulate a streamed answer for the call log.
//! - [`anthropic`]: Anthropic Messages wire helpers for providers that
//!   speak Messages natively: splice `model`, rewrite a message's or a
//!   stream's `model`, accumulate usage and content for the call log.
//! - [`tokens`]: prompt token counts from providers that can (llama.cpp).
//! - [`ssrf`]: the address policy of custom base URLs (allowlist, always
//!   refused link-local / metadata addresses, a resolver that checks
//!   addresses at connect time).

pub mod anthropic;
pub mod client;
pub mod discovery;
pub mod kind;
pub mod openai;
pub mod sse;
pub mod ssrf;
pub mod tokens;

pub use client::{ProviderClient, ProviderEndpoint, Timeouts, UpstreamError, UpstreamResponse};
pub use discovery::{DiscoveredModel, Discovery, ModelState};
pub use kind::ProviderKind;
pub use ssrf::{AddressPolicy, GuardedResolver, SsrfError};
