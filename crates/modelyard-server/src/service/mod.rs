//! The application layer: use cases with no HTTP framework in them. Handlers
//! (`api/`, `gateway/`) parse a request, call one function here and shape
//! its answer; the turn engine calls these too.

pub mod llm_call;
pub mod operations;
