//! `[limits]`: caps checked before anything is forwarded or streamed.

use super::raw::RawLimits;
use super::validate::error_in;
use super::ConfigError;

/// `[limits]`: caps checked before anything is forwarded or streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    /// Largest `n` (choices) a chat completion may ask for (`max_n`, default 8).
    pub max_n: u32,
    /// Largest `max_tokens` / `max_completion_tokens` (`max_output_tokens`,
    /// default 131 072 tokens).
    pub max_output_tokens: u32,
    /// Most messages in one request (`max_messages`, default 2 048).
    pub max_messages: u32,
    /// Most tools in one request (`max_tools`, default 128).
    pub max_tools: u32,
    /// Time a client has to send its request headers (`header_read_timeout_ms`,
    /// default 10 000 ms).
    pub header_read_timeout_ms: u64,
    /// Open SSE responses (streamed completions and event streams) in total
    /// (`max_streams`, default 1 024); beyond it a fast 429.
    pub max_streams: u32,
    /// Open SSE responses per API key, or per client address without keys
    /// (`max_streams_per_key`, default 64); beyond it a fast 429.
    pub max_streams_per_key: u32,
    /// Longest single SSE event accepted from an upstream, bytes
    /// (`max_sse_event_bytes`, default 8 MiB, 1 KiB..=1 GiB); a longer event
    /// (or a line that never ends) ends the stream with an error and closes
    /// the upstream connection.
    pub max_sse_event_bytes: usize,
    /// Open SSE responses per project, all its keys together
    /// (`max_streams_per_project`, default 256); beyond it a fast 429.
    pub max_streams_per_project: u32,
    /// Time a client has to send a request's whole body once its head is in
    /// (`body_read_timeout_ms`, default 30 000 ms); past it the connection
    /// is closed.
    pub body_read_timeout_ms: u64,
    /// Open client connections (`max_connections`, default 4 096); past it a
    /// new connection is accepted and closed at once.
    pub max_connections: u32,
    /// Non-streamed requests and background turns in flight at once
    /// (`max_concurrent_requests`, default 1 024); beyond it a fast 429.
    pub max_concurrent_requests: u32,
    /// Output tokens reserved against a token budget or `tokens_per_minute`
    /// for a request that names no `max_tokens` / `max_completion_tokens` /
    /// `max_output_tokens`, and for a conversation turn
    /// (`budget_reserve_tokens`, default 4 096, 0..=10 000 000); settled to
    /// the actual usage when the call ends ([`crate::quota`]).
    pub budget_reserve_tokens: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_n: 8,
            max_output_tokens: 131_072,
            max_messages: 2_048,
            max_tools: 128,
            header_read_timeout_ms: 10_000,
            max_streams: 1_024,
            max_streams_per_key: 64,
            max_sse_event_bytes: modelyard_upstream::sse::DEFAULT_MAX_EVENT_BYTES,
            max_streams_per_project: 256,
            body_read_timeout_ms: 30_000,
            max_connections: 4_096,
            max_concurrent_requests: 1_024,
            budget_reserve_tokens: 4_096,
        }
    }
}

/// `[limits]`.
pub(super) fn limits(raw: RawLimits, source_name: &str) -> Result<LimitsConfig, ConfigError> {
    let err = error_in(source_name);
    let d = LimitsConfig::default();
    let limit = |field: &str, value: Option<i64>, min: i64, max: i64, default: i64| {
        let v = value.unwrap_or(default);
        if (min..=max).contains(&v) {
            Ok(v)
        } else {
            Err(err(
                format!("limits.{field}"),
                format!("must be between {min} and {max}, got {v}"),
            ))
        }
    };
    Ok(LimitsConfig {
        max_n: limit("max_n", raw.max_n, 1, 128, d.max_n.into())? as u32,
        max_output_tokens: limit(
            "max_output_tokens",
            raw.max_output_tokens,
            1,
            10_000_000,
            d.max_output_tokens.into(),
        )? as u32,
        max_messages: limit(
            "max_messages",
            raw.max_messages,
            1,
            1_000_000,
            d.max_messages.into(),
        )? as u32,
        max_tools: limit("max_tools", raw.max_tools, 0, 10_000, d.max_tools.into())? as u32,
        header_read_timeout_ms: limit(
            "header_read_timeout_ms",
            raw.header_read_timeout_ms,
            100,
            600_000,
            d.header_read_timeout_ms as i64,
        )? as u64,
        max_streams: limit(
            "max_streams",
            raw.max_streams,
            1,
            1_000_000,
            d.max_streams.into(),
        )? as u32,
        max_streams_per_key: limit(
            "max_streams_per_key",
            raw.max_streams_per_key,
            1,
            1_000_000,
            d.max_streams_per_key.into(),
        )? as u32,
        max_sse_event_bytes: limit(
            "max_sse_event_bytes",
            raw.max_sse_event_bytes,
            1024,
            1 << 30,
            d.max_sse_event_bytes as i64,
        )? as usize,
        max_streams_per_project: limit(
            "max_streams_per_project",
            raw.max_streams_per_project,
            1,
            1_000_000,
            d.max_streams_per_project.into(),
        )? as u32,
        body_read_timeout_ms: limit(
            "body_read_timeout_ms",
            raw.body_read_timeout_ms,
            100,
            3_600_000,
            d.body_read_timeout_ms as i64,
        )? as u64,
        max_connections: limit(
            "max_connections",
            raw.max_connections,
            1,
            1_000_000,
            d.max_connections.into(),
        )? as u32,
        max_concurrent_requests: limit(
            "max_concurrent_requests",
            raw.max_concurrent_requests,
            1,
            1_000_000,
            d.max_concurrent_requests.into(),
        )? as u32,
        budget_reserve_tokens: limit(
            "budget_reserve_tokens",
            raw.budget_reserve_tokens,
            0,
            10_000_000,
            d.budget_reserve_tokens.into(),
        )? as u32,
    })
}
