//! What knows axum on Modelyard's own API, beside the handlers (`api/`):
//! the one error mapping ([`ApiError`]) and the extractors that answer a
//! rejection with a problem document ([`ApiJson`], [`ApiQuery`]), and the
//! route table with its access rules ([`routes`]) and the OpenAPI document
//! generated from the handlers next to it ([`openapi`]), and the budgets
//! and rate limits middleware ([`quota`]).

pub mod access;
mod error;
mod extract;
pub mod openapi;
pub mod quota;
pub mod routes;

pub use error::{store_problem, ApiError};
pub use extract::{ApiJson, ApiJsonOrDefault, ApiQuery};
