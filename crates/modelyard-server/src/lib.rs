//! The Modelyard HTTP server. The only crate that knows axum.
//!
//! - [`config`]: the typed configuration, loaded once.
//! - [`registry`]: providers, their clients, discovery and model resolution.
//! - [`routing`]: routes, deployment health (cooldowns) and affinity.
//! - [`gateway`]: the OpenAI-compatible endpoints.
//! - [`api`]: Modelyard's own API: handlers as adapters over [`service`].
//! - [`http`]: the route table with its access rules, `ApiError`, the
//!   extractors that answer rejections with problem documents.
//! - [`service`]: the application layer (use cases, `ServiceError`); no axum.
//! - [`conversations`]: the turn engine, live event buffers and bus.
//! - [`recorder`]: writes call records off the hot path.
//! - [`pricing`]: which price applies to a deployment; a call's cost.
//! - [`limits`]: stream slots and the body limit (`[limits]`).
//! - [`quota`]: budgets and rate limits of projects and keys (admission,
//!   settlement, leased shared counters).
//! - [`app`]: state, routes, start and shutdown.
//! - [`ui`]: the embedded web UI (`/ui`, public).

pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod conn;
pub mod conversations;
pub mod error;
pub mod gateway;
pub mod guard;
pub mod http;
pub mod limits;
pub mod pricing;
pub mod quota;
pub mod recorder;
pub mod redact;
pub mod registry;
pub mod routing;
pub mod service;
pub mod telemetry;
pub mod traces;
pub mod ui;

pub use app::{router, start, AppState, RunningServer, ServerError, ShutdownOutcome};
pub use config::{Config, ConfigError};
