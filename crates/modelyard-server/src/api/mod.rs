//! Modelyard's own API (camelCase JSON, RFC 9457 problem documents).

pub mod arena;
pub mod calls;
pub mod catalog;
pub mod conversations;
pub mod dto;
pub mod favorites;
pub mod health;
pub mod imports;
pub mod keys;
pub mod limits;
pub mod llms;
pub mod metrics;
pub mod openapi;
pub mod operations;
pub mod providers;
pub mod sessions;
