//! The application layer: use cases with no HTTP framework in them. Handlers
//! (`api/`, `gateway/`) parse a request, call one function here and shape
//! its answer; the turn engine calls these too.

pub mod arena;
pub mod context;
pub mod conversations;
pub mod error;
pub mod favorites;
pub mod imports;
pub mod keys;
pub mod llm_call;
pub mod llm_configs;
pub mod models;
pub mod operations;
pub mod replay;
pub mod responses;
pub mod routed;
pub mod tokens;
pub mod turn_target;
pub mod turns;
pub mod usage_limits;
pub mod warm;
