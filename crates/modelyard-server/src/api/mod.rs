//! Modelyard's own API (camelCase JSON, RFC 9457 problem documents).

pub mod calls;
