//! Pure domain types of Modelyard. No IO, no async, no HTTP types.
//!
//! - [`ids`]: typed ids (conversation, turn, LLM config, LLM session), parsed at the edge.
//! - [`model_id`]: composite `provider/model` ids and provider names (docs/design.md#model-ids).
//! - [`resolve`]: the one function that turns a requested model string into a
//!   provider and upstream model name, including legacy bare ids.
//! - [`usage`]: token usage arithmetic.
//! - [`limits`]: budgets and rate limits of a project or key, their UTC
//!   windows and the arithmetic of leased counter blocks.
//! - [`cost`]: prices and the cost of one call (nano-USD).
//! - [`conversation`]: conversation events and the fold that materializes them.
//! - [`turn_model`]: which model a conversation turn uses (docs/design.md#turn-model).
//! - [`llm_config`]: LLM config provider options, their validation and
//!   request fields.

pub mod conversation;
pub mod cost;
pub mod ids;
pub mod limits;
pub mod llm_config;
pub mod model_id;
pub mod resolve;
pub mod turn_model;
pub mod usage;

pub use cost::{call_cost_nusd, Price};
pub use ids::{ConversationId, IdError, LlmConfigId, SessionId, TurnId};
pub use model_id::{ModelId, ModelIdError, ModelRef, ProviderName};
pub use resolve::{resolve_model, ProviderView, Resolution, ResolveError, ResolvedFrom};
pub use usage::Usage;
